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

from .activation_blocks import Dims, FirstLayer, logits_backward_bytes, logits_bytes
from .dtypes import canonical_dtype, tensor_bytes
from .families import Family
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
    source: "analytic" (the family record's rule) or "traced" (measured under FakeTensorMode for
        an architecture memfit has no record for: `planner.traced`).
    instants: measured activation bytes (with gradient temporaries) at the three moments of
        backward the peak model uses (the loss's backward, the top layer's, the first layer's);
        None: derived from the fields above (`planner.peak`).
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
    source: str = "analytic"
    instants: tuple[int, int, int] | None = None

    @property
    def peak(self) -> int:
        """Activation-side bytes at the step's peak, to add to weights, gradients and states."""
        return max(self.total, self.peak_backward)

    def as_dict(self) -> dict[str, int]:
        return ({f.name: getattr(self, f.name) for f in fields(self)
                 if f.name not in ("source", "instants")} | {"peak": self.peak})


def adapted_linears(model: ModelConfig, targets: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
    """(input tensor, in_features) of each linear an adapter method adapts in a layer: the
    `block_linear` parameters whose module name ends with one of `targets` (None: all of them).
    The family record says which tensor each linear reads."""
    family = _family(model)
    out = []
    for p in model.params:
        if p.role != "block_linear" or p.layer != 0:
            continue
        if targets is not None and p.module.rpartition(".")[2] not in targets:
            continue
        if p.module not in family.linear_inputs:
            raise ValueError(f"{model.name}: the {family.name} record has no activation rule for an "
                             f"adapter on {p.name}")
        out.append((family.linear_inputs[p.module], family.in_features(p.shape)))
    return out


def lora_layer_bytes(x: Dims, linears: list[tuple[str, int]], rank: int, lora_d: int,
                     lora_m: int, groups: list[tuple[str, int]] | None = None,
                     ctx_kept: bool | None = None) -> int:
    """Adapter extras of one layer; peft's `lora.Linear` computes
    base(x) + B(A(dropout(x.to(A.dtype)))) · scaling.

    Each adapter saves A's output, lora_d·bs·r (B's input). A saves its input: the base
    linear's input itself (already counted) when adapters are in D without dropout; otherwise
    its own copy lora_d·bs·in and the dropout mask lora_m·bs·in. A frozen base linear saves
    nothing, so an input (of `groups`, every block linear's input; default: the adapted ones')
    that no adapter reads as it is is released: −D·bs·in once per distinct input (not ctx when
    the attention kernel saves it, as SDPA-flash does its output: `ctx_kept`, default: under
    the flash core).
    """
    ctx_kept = x.core == "flash" if ctx_kept is None else ctx_kept
    extra = len(linears) * lora_d * x.bs * rank
    copies = lora_d != x.D or lora_m > 0
    if copies:
        extra += sum((lora_d + lora_m) * x.bs * n for _, n in linears)
    read_as_is = set() if copies else {key for key, _ in linears}
    released = {(key, n) for key, n in (groups if groups is not None else linears)
                if key not in read_as_is and not (key == "ctx" and ctx_kept)}
    return extra - sum(x.D * x.bs * n for _, n in released)


def lora_grad_bytes(x: Dims, linears: list[tuple[str, int]], lora_d: int, lora_m: int) -> int:
    """An adapter that copies its input (cast or dropout) holds, in backward, the gradient of
    A's input in lora_d and its image through dropout (lora_d) or the cast (D), for the widest
    input (the MLP's last linear, first in backward): (lora_d + lora_d or D)·bs·in."""
    if lora_d == x.D and not lora_m:
        return 0
    return (lora_d + (lora_d if lora_m else x.D)) * x.bs * max(n for _, n in linears)


def frozen_input_bytes(x: Dims, family: Family, linears: list[tuple[str, int]], lora_m: int,
                       first: FirstLayer) -> int:
    """What layer 0 does not save under adapters without checkpointing, its input (from frozen
    embeddings) needing no gradient: the family's rule (the pre-attention norm; an attention no
    adapter touches and what follows it), and the adapter-dropout masks on inputs that need no
    gradient (dropout saves none then): the attention input, and the MLP's input when the
    attention carries no adapter."""
    frozen_inputs = {"attn_in"} | (set() if first.attention else {"mlp_in"})
    masks = sum(lora_m * x.bs * n for key, n in linears if key in frozen_inputs)
    return family.activation.frozen_first_layer(x, first) + masks


def first_layer(family: Family, targets: tuple[str, ...] | None) -> FirstLayer:
    """Which attention projections of a layer carry adapters, and whether a linear reading the
    MLP's input does (None: every block linear)."""
    def adapted(names) -> bool:
        return targets is None or any(n in targets for n in names)
    mlp_in = [m.rpartition(".")[2] for m, key in family.linear_inputs.items() if key == "mlp_in"]
    return FirstLayer(*(adapted(family.attention_inputs.get(role, ())) for role in "qkvo"),
                      adapted(mlp_in), targets)


# ---- backward -------------------------------------------------------------------------------

def layer_backward_bytes(x: Dims, family: Family, lora_saved: int = 0, lora_grads: int = 0) -> int:
    """One layer's saved tensors (adapters' included) plus its backward's gradient peak: the
    family's candidate phases, with the layer output's gradient D·bsh alive throughout."""
    return max(family.activation.backward_phases(x, lora_saved, lora_grads)) + x.D * x.bsh


# ---- the entry point ------------------------------------------------------------------------

def activation_memory(model: ModelConfig, *, batch: int, seq: int, dtype: str = "bf16",
                      attention: str = "sdpa", checkpointing: str = "none",
                      lora_rank: int | None = None, lora_dropout: float = 0.0,
                      lora_dtype: str | None = None, dropout: float | None = None,
                      kernels: str = "cuda", lora_targets: tuple[str, ...] | None = None
                      ) -> ActivationBreakdown:
    """Activation bytes of one training step of `model` on a (batch, seq) micro-batch.

    dtype: the compute dtype of weights and activations. attention: "sdpa" (transformers'
    default), "eager" or "flash". checkpointing: "none" or "full" (every layer, transformers'
    non-reentrant `activation_checkpointing_enable()`). lora_rank: adapters over a frozen base
    (None: full fine-tuning) on the block linears named by `lora_targets` (module names such
    as "q_proj"; None: every block linear); lora_dtype: the adapters' dtype (None: dtype;
    peft keeps fp32 adapters on a bf16 base unless `autocast_adapter_dtype=False`).
    dropout: one probability for every dropout (None: the config's, 0.1 for GPT-2 and
    RoBERTa). kernels: "cuda" (the planner's case) or "cpu" (dropout noise and LayerNorm stats
    in D, SDPA's math fallback under attention dropout).

    `peak_backward` is the larger of two moments: the backward's start (`total` plus the loss
    gradients) and the last layer's backward (the stored layers plus that layer's saved or
    recomputed tensors and gradient peak, the head and loss tensors released by then).
    Raises ValueError, saying what to change, for an input it cannot model. An architecture
    without a family record is traced instead (`planner.traced`, imported only then).
    """
    if model.family is None:
        from . import traced      # lazy: the one planner module that runs the profiler
        return traced.activation_memory(
            model, batch=batch, seq=seq, dtype=dtype, attention=attention,
            checkpointing=checkpointing, lora_rank=lora_rank, lora_dropout=lora_dropout,
            lora_dtype=lora_dtype, dropout=dropout, kernels=kernels, lora_targets=lora_targets)
    family = _family(model)
    _check(model, batch, seq, attention, checkpointing, kernels, lora_rank)
    x = _dims(model, family, batch, seq, _compute_bytes(dtype, "dtype"), attention, kernels,
              dropout, lora_rank is not None, checkpointing == "full")
    rule = family.activation
    lora_layer, lora_grads, discount, copies = 0, 0, 0, False
    if lora_rank is not None:
        lora_layer, lora_grads, discount, copies = _lora_terms(
            x, model, family, lora_rank, lora_dropout, lora_dtype or dtype, kernels, lora_targets)
    per_layer, full = rule.layer(x), checkpointing == "full"
    embeddings, head = rule.embeddings(x, full), rule.head(x)
    logits = logits_bytes(x, rule.causal_loss_upcast)
    top = layer_backward_bytes(x, family, lora_layer, lora_grads)    # the last layer in its backward
    if full:
        layers = x.L * x.D * x.bsh + rule.checkpoint_held(x)
        recompute, lora = per_layer + lora_layer, 0
        shared = x.D * x.bsh if rule.input_saved_by_layer(x, copies) else 0
        in_layers = layers + embeddings + top - shared
    else:
        stacked = rule.stack(x) if rule.stack else x.L * per_layer
        layers, recompute, lora = stacked - discount, 0, x.L * lora_layer
        in_layers = layers - per_layer + embeddings + lora - lora_layer + top
    total = layers + embeddings + head + logits + lora
    start = total + logits_backward_bytes(x, rule.causal_loss_upcast)
    return ActivationBreakdown(per_layer, layers, recompute, embeddings, head, logits, lora,
                               total, max(start, in_layers))


def _family(model: ModelConfig) -> Family:
    if model.family is None:
        raise ValueError(f"{model.name}: memfit has no activation record for model_type "
                         f"{model.model_type!r}; its activations must be traced")
    return model.family


def _check(model: ModelConfig, batch, seq, attention, checkpointing, kernels, lora_rank) -> None:
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
    family = model.family
    if family is not None and attention not in family.attentions:
        raise ValueError(f"{model.name}: transformers' {family.name} models do not support "
                         f"attention {attention!r}: choose one of {', '.join(family.attentions)}")


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r:.40}")
    return float(value)


def _compute_bytes(dtype: str, name: str) -> int:
    canonical = canonical_dtype(dtype)
    if canonical not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"{name} {dtype!r} is a storage format, not a compute dtype: "
                         "choose fp32, bf16 or fp16")
    return tensor_bytes(1, canonical)


def _dims(model: ModelConfig, family: Family, batch: int, seq: int, D: int, attention: str,
          kernels: str, dropout: float | None, frozen: bool, checkpointing: bool) -> Dims:
    """The symbols, with dropouts from `dropout` or the config and the attention kernel."""
    (hidden_key, hidden_default), (attn_key, attn_default) = family.dropout_fields
    if dropout is not None:
        p = _probability("dropout", dropout)
        p_hidden, p_attn = (p if hidden_key else 0.0), p
    else:
        p_hidden, p_attn = (_probability(key, model.hf_config.get(key, default)) if key else 0.0
                            for key, default in family.dropout_fields)
    key, default = family.act_field
    act = model.hf_config.get(key, default)
    if act not in ACTIVATION_SAVES:
        raise ValueError(f"{model.name}: MLP activation {act!r:.40} is not modelled; known: "
                         f"{', '.join(ACTIVATION_SAVES)}")
    mask = 1 if kernels == "cuda" else D
    core = "eager" if attention == "eager" else (
        "math" if kernels == "cpu" and p_attn > 0 else "flash")
    return Dims(batch, seq, model.hidden_size, model.intermediate_size,
                model.num_heads, model.num_kv_heads, model.head_dim, model.vocab_size,
                model.num_layers, D, 4 if kernels == "cuda" else D,
                mask if p_hidden > 0 else 0, mask if p_attn > 0 else 0, core,
                ACTIVATION_SAVES[act], frozen,
                bool(model.hf_config.get("use_cache", True)) and not checkpointing, attention,
                tuple(sorted(family.block_options(model.hf_config).items())), model.hf_config,
                family.routing(model.hf_config))


def _lora_terms(x: Dims, model: ModelConfig, family: Family, rank: int, dropout: float,
                lora_dtype: str, kernels: str, targets) -> tuple[int, int, int, bool]:
    """(adapter extras per layer, their backward gradients, layer 0's frozen-input saving,
    whether the adapters copy their inputs)."""
    lora_d = _compute_bytes(lora_dtype, "lora_dtype")
    p = _probability("lora_dropout", dropout)
    lora_m = (1 if kernels == "cuda" else lora_d) if p > 0 else 0
    linears = adapted_linears(model, targets)
    # adapters on bare parameters (peft target_parameters: fused experts) are the record's rule
    param_saved, param_grads = family.activation.parameter_adapters(x, targets, rank, lora_d)
    if not linears and not param_saved:
        raise ValueError(f"nothing of {model.name} matches the LoRA targets {', '.join(targets)}")
    ctx_kept = family.activation.ctx_kept(x) if family.activation.ctx_kept else None
    return (lora_layer_bytes(x, linears, rank, lora_d, lora_m, adapted_linears(model), ctx_kept)
            + param_saved,
            max(lora_grad_bytes(x, linears, lora_d, lora_m) if linears else 0, param_grads),
            frozen_input_bytes(x, family, linears, lora_m, first_layer(family, targets)),
            lora_d != x.D or lora_m > 0)
