"""Activation memory of one training step: the tensors autograd saves for backward.

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
arXiv:2205.05198, §4.1) count 34·sbh + 5·as²b bytes per GPT layer in fp16. Every term here is
re-derived from what PyTorch 2.13's autograd saves for transformers 5.24's `modeling_llama.py`,
`modeling_gpt2.py` and `modeling_roberta.py`, checked tensor by tensor with
`torch.autograd.graph.saved_tensors_hooks` and end to end with MemTracker
(tests/planner/test_activations_memtracker.py). Rules used throughout:

* a tensor saved by several ops (q/k/v's shared input, the SDPA output that is o_proj's input)
  is one storage, counted once;
* `linear`/`addmm` save their input only if their weight trains; `a * b` saves `b` only if `a`
  needs a gradient (a frozen RMSNorm weight keeps no normalised input);
* SiLU/GELU save their input, tanh and softmax their output, `x.pow(n)` its input; views save
  nothing, but `matmul` on a transpose it cannot view saves a contiguous copy;
* dropout (p > 0) saves a mask: CUDA's fused `native_dropout` a bool (m = 1 byte per element),
  CPU's composite dropout a noise tensor in the input's dtype (m = D);
* SDPA's flash (and memory-efficient, cuDNN) kernels save q, k, v, the output and an fp32
  logsumexp, never the s×s scores. The planner assumes this GPU path (`kernels="cuda"`) for an
  unpadded batch (no attention mask: `is_causal`, GQA passed as k heads). On CPU, SDPA runs its
  flash kernel when attention dropout is 0 and otherwise falls back to the math kernel (fp32
  q·kᵀ, softmax and dropout, like eager attention): `kernels="cpu"` models what a CPU run saves,
  which is what the MemTracker test measures.

Symbols: b batch, s sequence, h hidden, i intermediate, a heads, k kv-heads, d head_dim,
V vocabulary, L layers, D bytes per activation element, S = b·a·s² attention scores,
t bytes per LayerNorm mean/rstd element (fp32 on CUDA, D on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from .activation_blocks import (LAYER_BYTES, Dims, attention_bytes, embeddings_bytes, head_bytes,
                                layer_norm_bytes, logits_backward_bytes, logits_bytes, mlp_bytes,
                                rms_norm_bytes)
from .dtypes import canonical_dtype, tensor_bytes
from .models import ModelConfig

__all__ = ["ActivationBreakdown", "activation_memory", "ATTENTIONS", "CHECKPOINTING", "KERNELS",
           "ACTIVATION_SAVES"]

ATTENTIONS = ("sdpa", "eager", "flash")      # "flash": FlashAttention-2, saves as SDPA-flash
CHECKPOINTING = ("none", "full")
KERNELS = ("cuda", "cpu")

#: b·s·i tensors an MLP activation saves besides its output (which the next linear saves).
#: gelu_new, GPT-2's Python formula: x (for pow), tanh(...), 0.5·x and 1 + tanh(...).
ACTIVATION_SAVES = {"silu": 1, "swish": 1, "gelu": 1, "gelu_pytorch_tanh": 1, "quick_gelu": 2,
                    "gelu_new": 4, "relu": 0}
_ACT_KEY = {"llama": ("hidden_act", "silu"), "gpt2": ("activation_function", "gelu_new"),
            "roberta": ("hidden_act", "gelu")}
#: (hidden, attention) dropout fields and their transformers defaults (GPT-2's embd_pdrop is
#: taken as resid_pdrop).
_DROPOUT_KEYS = {"llama": ((None, 0.0), ("attention_dropout", 0.0)),
                 "gpt2": (("resid_pdrop", 0.1), ("attn_pdrop", 0.1)),
                 "roberta": (("hidden_dropout_prob", 0.1), ("attention_probs_dropout_prob", 0.1))}


@dataclass(frozen=True)
class ActivationBreakdown:
    """Activation bytes of one micro-batch's training step.

    per_layer: one layer's saved tensors without checkpointing (adapter extras excluded).
    layers: the layer stack at the forward's end: L·per_layer, or with full checkpointing the
        L layer inputs (plus what every checkpoint holds: position ids, an eager mask).
    recompute: with checkpointing, one layer's recomputed activations (adapters' included)
        alive during its backward; 0 otherwise.
    embeddings: saved before the first layer (rotary cos/sin, embedding dropout, ...).
    head: the final norm's and the LM head's saved inputs.
    logits: the loss's saved log-softmax and labels.
    lora: adapter extras held at the forward's end (rank-r intermediates, input copies).
    total: alive at the end of the forward: layers + embeddings + head + logits + lora.
    peak_backward: activations plus gradient temporaries at the backward's peak.
    """
    per_layer: int
    layers: int
    recompute: int
    embeddings: int
    head: int
    logits: int
    lora: int
    total: int
    peak_backward: int

    @property
    def peak(self) -> int:
        """Activation-side bytes at the step's peak, to add to weights, gradients and states."""
        return max(self.total, self.peak_backward)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"peak": self.peak}


_LINEAR_INPUT = {
    "self_attn.q_proj": "attn_in", "self_attn.k_proj": "attn_in", "self_attn.v_proj": "attn_in",
    "self_attn.o_proj": "ctx", "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in",
    "mlp.down_proj": "mlp_act", "attn.c_attn": "attn_in", "attn.c_proj": "ctx",
    "mlp.c_fc": "mlp_in", "mlp.c_proj": "mlp_act", "attention.self.query": "attn_in",
    "attention.self.key": "attn_in", "attention.self.value": "attn_in",
    "attention.output.dense": "ctx", "intermediate.dense": "mlp_in", "output.dense": "mlp_act"}


def adapted_linears(model: ModelConfig) -> list[tuple[str, int]]:
    """(input tensor, in_features) of each linear LoRA adapts in a layer: the `block_linear`
    parameters, LoRA's targets in `planner.methods`."""
    out = []
    for p in model.params:
        if p.role == "block_linear" and p.layer == 0:
            local = p.name.split(".0.", 1)[1].removesuffix(".weight")
            in_features = p.shape[0] if model.family == "gpt2" else p.shape[1]   # Conv1D: (in, out)
            if local not in _LINEAR_INPUT:
                raise ValueError(f"{model.name}: no activation rule for LoRA on {p.name}")
            out.append((_LINEAR_INPUT[local], in_features))
    return out


def lora_layer_bytes(x: Dims, linears: list[tuple[str, int]], rank: int, lora_d: int,
                     lora_m: int) -> int:
    """Adapter extras of one layer; peft's `lora.Linear` computes
    base(x) + B(A(dropout(x.to(A.dtype)))) · scaling.

    Each adapter saves A's output, lora_d·bs·r (B's input). A saves its input: the base
    linear's input itself (already counted) when adapters are in D without dropout; otherwise
    its own copy lora_d·bs·in and the dropout mask lora_m·bs·in. The frozen base linear saves
    nothing, so an input that only linears read is then released: −D·bs·in once per distinct
    input (not ctx under flash, which SDPA saves as its output).
    """
    extra = len(linears) * lora_d * x.bs * rank
    if lora_d == x.D and not lora_m:
        return extra
    extra += sum((lora_d + lora_m) * x.bs * n for _, n in linears)
    released = {(key, n) for key, n in linears if not (key == "ctx" and x.core == "flash")}
    return extra - sum(x.D * x.bs * n for _, n in released)


def lora_grad_bytes(x: Dims, linears: list[tuple[str, int]], lora_d: int, lora_m: int) -> int:
    """An adapter that copies its input (cast or dropout) holds, in backward, the gradient of
    A's input in lora_d and its image through dropout (lora_d) or the cast (D), for the widest
    input (the MLP's last linear, first in backward): (lora_d + lora_d or D)·bs·in."""
    if lora_d == x.D and not lora_m:
        return 0
    return (lora_d + (lora_d if lora_m else x.D)) * x.bs * max(n for _, n in linears)


def frozen_input_bytes(x: Dims, linears: list[tuple[str, int]], lora_m: int) -> int:
    """What layer 0 does not save under LoRA without checkpointing, its input (from frozen
    embeddings) needing no gradient: the pre-attention norm (Llama 4bsh + 4bs, GPT-2's ln_1)
    and the adapter-dropout masks on the attention input (dropout saves none for a non-grad
    input)."""
    norm = {"llama": 4 * x.bsh + 4 * x.bs, "gpt2": layer_norm_bytes(x), "roberta": 0}[x.family]
    return norm + sum(lora_m * x.bs * n for key, n in linears if key == "attn_in")


# ---- backward -------------------------------------------------------------------------------

def attention_grad_bytes(x: Dims) -> int:
    """Gradients alive at the worst point of the attention core's backward.

    eager Llama (fp32 softmax): the probabilities' gradient in fp32 and the scores' in D,
    (4 + D)·S; eager GPT-2/RoBERTa: D·S net of the released dropped copy; CPU math: 4·S.
    flash: dq, dk, dv, the output gradient and CUDA's fp32 dq accumulator.
    """
    S = x.b * x.a * x.s * x.s
    if x.core == "flash":
        return x.D * x.bs * x.d * (2 * x.a + 2 * x.k) + 4 * x.bs * x.a * x.d
    if x.core == "math":
        return 4 * S
    return (4 + x.D) * S if x.family == "llama" else x.D * S


def layer_backward_bytes(x: Dims, lora_saved: int = 0, lora_grads: int = 0) -> int:
    """One layer's saved tensors (adapters' included) plus its backward's gradient peak.

    The MLP's backward runs first, with everything saved: the gradients of the activation's
    output and inputs (SwiGLU, gelu_new: 2·D·bsi net of the released down/c_proj input; exact
    GELU: D·bsi), or before them the last linear's adapter gradients. Llama's post-attention
    RMSNorm backward, after the MLP's release, holds five fp32 b·s·h temporaries
    (`pow_backward`'s 2·x chain, the mean's expanded gradient, the product's gradients). The
    attention backward runs once the MLP, its norm and masks are released. Throughout, the
    layer output's gradient D·bsh is alive.
    """
    per_layer = LAYER_BYTES[x.family](x)
    pre_attention = attention_bytes(x, softmax_fp32=x.family == "llama") + {
        "llama": rms_norm_bytes(x), "gpt2": layer_norm_bytes(x), "roberta": 0}[x.family]
    mlp_grads = (2 if x.family == "llama" or x.act_saves > 1 else 1) * x.D * x.bs * x.i
    phases = [per_layer + lora_saved + max(mlp_grads, lora_grads),
              pre_attention + attention_grad_bytes(x)]
    if x.family == "llama":
        phases.append(per_layer - mlp_bytes(x, gated=True) + 5 * 4 * x.bsh)
    return max(phases) + x.D * x.bsh


def checkpoint_held_bytes(x: Dims) -> int:
    """Held by every checkpoint besides its layer input (keyword arguments of the layer, freed
    after the forward without checkpointing): eager causal attention's additive mask, (b, 1,
    s, s) in D (SDPA gets `is_causal`, RoBERTa no mask), and Llama's and GPT-2's position ids,
    int64 (1, s) (which GPT-2's trained wpe already saves)."""
    mask = x.D * x.b * x.s * x.s if x.core == "eager" and x.family != "roberta" else 0
    ids = 8 * x.s if x.family == "llama" or (x.family == "gpt2" and x.frozen) else 0
    return mask + ids


def input_saved_by_layer(x: Dims, lora_copies: bool) -> bool:
    """Whether a layer saves its input tensor itself, which a checkpoint already holds: fp32
    RMSNorm, GPT-2's ln_1, RoBERTa's q/k/v (unless adapters copy their input)."""
    return {"llama": x.D == 4, "gpt2": True, "roberta": not lora_copies}[x.family]


# ---- the entry point ------------------------------------------------------------------------

def activation_memory(model: ModelConfig, *, batch: int, seq: int, dtype: str = "bf16",
                      attention: str = "sdpa", checkpointing: str = "none",
                      lora_rank: int | None = None, lora_dropout: float = 0.0,
                      lora_dtype: str | None = None, dropout: float | None = None,
                      kernels: str = "cuda") -> ActivationBreakdown:
    """Activation bytes of one training step of `model` on a (batch, seq) micro-batch.

    dtype: the compute dtype of weights and activations. attention: "sdpa" (transformers'
    default), "eager" or "flash". checkpointing: "none" or "full" (every layer, transformers'
    non-reentrant `activation_checkpointing_enable()`). lora_rank: LoRA on every block linear
    over a frozen base (None: full fine-tuning); lora_dtype: the adapters' dtype (None: dtype;
    peft keeps fp32 adapters on a bf16 base unless `autocast_adapter_dtype=False`).
    dropout: one probability for every dropout (None: the config's, 0.1 for GPT-2 and
    RoBERTa). kernels: "cuda" (the planner's case) or "cpu" (dropout noise and LayerNorm stats
    in D, SDPA's math fallback under attention dropout).

    `peak_backward` is the larger of two moments: the backward's start (`total` plus the loss
    gradients) and the last layer's backward (the stored layers plus that layer's saved or
    recomputed tensors and gradient peak, the head and loss tensors released by then).
    Raises ValueError, saying what to change, for an input it cannot model.
    """
    _check(model, batch, seq, attention, checkpointing, kernels, lora_rank)
    x = _dims(model, batch, seq, _compute_bytes(dtype, "dtype"), attention, kernels, dropout,
              lora_rank is not None, checkpointing == "full")
    lora_layer, lora_grads, discount, copies = 0, 0, 0, False
    if lora_rank is not None:
        lora_layer, lora_grads, discount, copies = _lora_terms(
            x, model, lora_rank, lora_dropout, lora_dtype or dtype, kernels)
    per_layer, full = LAYER_BYTES[x.family](x), checkpointing == "full"
    embeddings, head, logits = embeddings_bytes(x, full), head_bytes(x), logits_bytes(x)
    top = layer_backward_bytes(x, lora_layer, lora_grads)    # the last layer in its backward
    if full:
        layers = x.L * x.D * x.bsh + checkpoint_held_bytes(x)
        recompute, lora = per_layer + lora_layer, 0
        shared = x.D * x.bsh if input_saved_by_layer(x, copies) else 0
        in_layers = layers + embeddings + top - shared
    else:
        layers, recompute, lora = x.L * per_layer - discount, 0, x.L * lora_layer
        in_layers = layers - per_layer + embeddings + lora - lora_layer + top
    total = layers + embeddings + head + logits + lora
    return ActivationBreakdown(per_layer, layers, recompute, embeddings, head, logits, lora,
                               total, max(total + logits_backward_bytes(x), in_layers))


def _check(model: ModelConfig, batch, seq, attention, checkpointing, kernels, lora_rank) -> None:
    if model.family not in LAYER_BYTES:
        raise ValueError(f"activation memory is modelled for Llama-style (llama, mistral, "
                         f"qwen2), GPT-2 and RoBERTa blocks; {model.name} is model_type "
                         f"{model.model_type!r}")
    for name, value in (("batch", batch), ("seq", seq),
                        ("lora_rank", 1 if lora_rank is None else lora_rank)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if seq > model.max_position:
        raise ValueError(f"seq {seq} is longer than {model.name}'s {model.max_position} "
                         f"positions: use seq <= {model.max_position}")
    for name, value, allowed in (("attention", attention, ATTENTIONS),
                                 ("checkpointing", checkpointing, CHECKPOINTING),
                                 ("kernels", kernels, KERNELS)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
    if attention == "flash" and kernels == "cpu":
        raise ValueError("FlashAttention-2 runs on CUDA only: use attention='sdpa' on CPU")


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _compute_bytes(dtype: str, name: str) -> int:
    canonical = canonical_dtype(dtype)
    if canonical not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"{name} {dtype!r} is a storage format, not a compute dtype: "
                         "choose fp32, bf16 or fp16")
    return tensor_bytes(1, canonical)


def _dims(model: ModelConfig, batch: int, seq: int, D: int, attention: str, kernels: str,
          dropout: float | None, frozen: bool, checkpointing: bool) -> Dims:
    """The symbols, with dropouts from `dropout` or the config and the attention kernel."""
    if dropout is not None:
        p = _probability("dropout", dropout)
        p_hidden, p_attn = (0.0 if model.family == "llama" else p), p
    else:
        p_hidden, p_attn = (_probability(key, model.hf_config.get(key, default)) if key else 0.0
                            for key, default in _DROPOUT_KEYS[model.family])
    key, default = _ACT_KEY[model.family]
    act = model.hf_config.get(key, default)
    if act not in ACTIVATION_SAVES:
        raise ValueError(f"{model.name}: MLP activation {act!r} is not modelled; known: "
                         f"{', '.join(ACTIVATION_SAVES)}")
    mask = 1 if kernels == "cuda" else D
    core = "eager" if attention == "eager" else (
        "math" if kernels == "cpu" and p_attn > 0 else "flash")
    return Dims(model.family, batch, seq, model.hidden_size, model.intermediate_size,
                 model.num_heads, model.num_kv_heads, model.head_dim, model.vocab_size,
                 model.num_layers, D, 4 if kernels == "cuda" else D,
                 mask if p_hidden > 0 else 0, mask if p_attn > 0 else 0, core,
                 ACTIVATION_SAVES[act], frozen,
                 bool(model.hf_config.get("use_cache", True)) and not checkpointing)


def _lora_terms(x: Dims, model: ModelConfig, rank: int, dropout: float, lora_dtype: str,
                kernels: str) -> tuple[int, int, int, bool]:
    """(adapter extras per layer, their backward gradients, layer 0's frozen-input saving,
    whether the adapters copy their inputs)."""
    lora_d = _compute_bytes(lora_dtype, "lora_dtype")
    p = _probability("lora_dropout", dropout)
    lora_m = (1 if kernels == "cuda" else lora_d) if p > 0 else 0
    linears = adapted_linears(model)
    return (lora_layer_bytes(x, linears, rank, lora_d, lora_m),
            lora_grad_bytes(x, linears, lora_d, lora_m),
            frozen_input_bytes(x, linears, lora_m), lora_d != x.D or lora_m > 0)
