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

from dataclasses import dataclass, fields, replace

from . import amp
from .activation_blocks import Dims, FirstLayer
from .dtypes import canonical_dtype, tensor_bytes
from .families import Family
from .loss import LossContext, chunk_rows, get_loss_impl
from .models import ModelConfig
from .offload import offloaded

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
    head: the final norm's and the LM head's saved inputs (and, under autocast, the head
        weight's saved 16-bit cast).
    logits: what the loss keeps at the forward's end (`planner.loss`): log-softmax and labels,
        or a fused loss's input and weight gradients.
    lora: adapter extras held at the forward's end (rank-r intermediates, input copies).
    autocast_cache: autocast's weight casts no backward needs, held by its cache until the
        forward's autocast region ends (biases; every layer's with checkpointing); 0 without.
    total: alive at the end of the forward: layers + embeddings + head + logits + lora +
        autocast_cache.
    peak_backward: activations plus gradient temporaries at the backward's peak.
    peak_forward: at the loss's own forward peak (chunk logits, fp32 copies), before `logits`
        is all that remains of it.
    host: with activation offloading, the pinned host memory the offloaded tensors take (the
        other fields are then what stays on the device); 0 without.
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
    autocast_cache: int = 0
    peak_forward: int = 0
    host: int = 0

    @property
    def peak(self) -> int:
        """Activation-side bytes at the step's peak, to add to weights, gradients and states."""
        return max(self.total, self.peak_forward, self.peak_backward)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"peak": self.peak}


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
                     cast: bool = False) -> int:
    """Adapter extras of one layer; peft's `lora.Linear` computes
    base(x) + B(A(dropout(x.to(A.dtype)))) · scaling.

    Each adapter saves A's output, lora_d·bs·r (B's input). A saves its input: the base
    linear's input itself (already counted) when adapters are in D without dropout; otherwise
    its own copy lora_d·bs·in and the dropout mask lora_m·bs·in. A frozen base linear saves
    nothing, so an input (of `groups`, every block linear's input; default: the adapted ones')
    that no adapter reads as it is is released: −D·bs·in once per distinct input (not ctx under
    flash, which SDPA saves as its output). `cast`: the input reaches A as a copy even in D
    (under autocast, fp32 adapters: peft's `x.to(fp32)`, then autocast's cast back to D).
    """
    extra = len(linears) * lora_d * x.bs * rank
    copies = cast or lora_d != x.D or lora_m > 0
    if copies:
        extra += sum((lora_d + lora_m) * x.bs * n for _, n in linears)
    read_as_is = set() if copies else {key for key, _ in linears}
    released = {(key, n) for key, n in (groups if groups is not None else linears)
                if key not in read_as_is and not (key == "ctx" and x.core == "flash")}
    return extra - sum((x.M if key == "mlp_act" else x.D) * x.bs * n for key, n in released)


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
    """Which attention projections of a layer carry adapters (None: every block linear)."""
    def adapted(role: str) -> bool:
        names = family.attention_inputs.get(role, ())
        return targets is None or any(n in targets for n in names)
    return FirstLayer(adapted("q"), adapted("k"), adapted("v"), adapted("o"))


# ---- backward -------------------------------------------------------------------------------

def layer_backward_bytes(x: Dims, family: Family, lora_saved: int = 0, lora_grads: int = 0) -> int:
    """One layer's saved tensors (adapters' included) plus its backward's gradient peak: the
    family's candidate phases, with the layer output's gradient (the stream's dtype, R·bsh)
    alive throughout."""
    return max(family.activation.backward_phases(x, lora_saved, lora_grads)) + x.R * x.bsh


# ---- the entry point ------------------------------------------------------------------------

def activation_memory(model: ModelConfig, *, batch: int, seq: int, dtype: str = "bf16",
                      attention: str = "sdpa", checkpointing: str = "none",
                      lora_rank: int | None = None, lora_dropout: float = 0.0,
                      lora_dtype: str | None = None, dropout: float | None = None,
                      kernels: str = "cuda", lora_targets: tuple[str, ...] | None = None,
                      autocast: bool = False, stream_dtype: str | None = None,
                      loss: str = "full", loss_impl: str | None = None,
                      loss_chunks: int | None = None, loss_chunk_size: int | None = None,
                      head_dtype: str | None = None, offload: bool = False,
                      base_keeps_input_dtype: bool = False,
                      quantized_linears: bool = False) -> ActivationBreakdown:
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
    autocast: the step runs under `torch.autocast(dtype)` with weights, and so the residual
    stream, in `stream_dtype` (`planner.amp`). loss, loss_impl, loss_chunks, loss_chunk_size:
    the loss's kind, implementation and chunking (`planner.loss`); head_dtype: the LM head
    weight's dtype (default: the stream's), which a fused loss's weight gradient takes.
    offload: torchtune's activation offloading (`planner.offload`; needs full checkpointing):
    the fields are then what stays on the device, and `host` what went to pinned host memory.
    base_keeps_input_dtype: the frozen base's linears return their input's dtype
    (bitsandbytes' `Linear4bit`): under autocast over an fp32 stream the MLP's intermediates are
    then fp32. quantized_linears: the block linears are Q-GaLore's INT8 layers, which under
    autocast save their input as it arrives and have no weight of their own to cast.

    `peak_backward` is the larger of two moments: the backward's start (`total` plus the loss
    gradients) and the last layer's backward (the stored layers plus that layer's saved or
    recomputed tensors and gradient peak, the head and loss tensors released by then);
    `peak_forward` is the loss's own forward peak.
    Raises ValueError, saying what to change, for an input it cannot model.
    """
    family = _family(model)
    _check(model, batch, seq, attention, checkpointing, kernels, lora_rank)
    D = _compute_bytes(dtype, "dtype")
    R = _compute_bytes(stream_dtype, "stream_dtype") if stream_dtype else D
    if R != D and not autocast:
        raise ValueError("a residual stream in another dtype than the compute dtype needs autocast")
    x = _dims(model, family, batch, seq, D, attention, kernels, dropout, lora_rank is not None,
              checkpointing == "full", R, autocast, R if base_keeps_input_dtype else D,
              quantized_linears)
    rule, full = family.activation, checkpointing == "full"
    lora_layer, lora_grads, discount, copies, casts = 0, 0, 0, False, amp.NO_CASTS
    first_dropped = 0       # layer 0's frozen casts that nothing keeps (their input needs no gradient)
    if lora_rank is not None:
        lora_layer, lora_grads, discount, copies, casts = _lora_terms(
            x, model, family, lora_rank, lora_dropout, lora_dtype or dtype, kernels, lora_targets,
            autocast)
        lora_layer += casts.layer_saved
        if autocast and R != D:     # a frozen head outside D: cast afresh, kept for backward
            casts = replace(casts, head_saved=amp.frozen_head_cast(model, D))
            if not base_keeps_input_dtype:      # plain frozen linears outside D: the same
                first = first_layer(family, lora_targets)
                base, dropped = amp.frozen_base_casts(
                    model, family, D, {"attn_in"} | (set() if first.attention else {"mlp_in"}))
                lora_layer, first_dropped = lora_layer + base, dropped
    elif autocast:
        casts = amp.weight_casts(model, D, trained=True, block_linears=not quantized_linears)
    loss_part = _loss(x, model, rule, autocast, loss, loss_impl, loss_chunks, loss_chunk_size,
                      head_dtype or stream_dtype or dtype)
    per_layer = rule.layer(x) + (0 if lora_rank is not None else casts.layer_saved)
    embeddings = rule.embeddings(x, full)
    head, head_cached = rule.head(x) + casts.head_saved, casts.head_cached
    if loss_part.releases_head_input:       # the head's matmul ran inside the loss
        head -= casts.head_saved + (0 if x.frozen else x.D * x.bsh)
        # autocast caches casts of weights that require grad only: a frozen head's is transient
        head_cached += casts.head_saved if loss_part.caches_head_cast and not x.frozen else 0
    top = layer_backward_bytes(x, family, lora_layer, lora_grads) + (
        0 if lora_rank is not None else casts.layer_saved)      # the last layer in its backward
    host = 0
    if offload and not full:
        raise ValueError("activation offloading is modelled as torchtune runs it, with activation "
                         "checkpointing (its recipes require both): add --checkpointing full")
    if full:
        layers = x.L * x.R * x.bsh + rule.checkpoint_held(x)
        recompute, lora = per_layer + lora_layer, 0
        shared = x.R * x.bsh if rule.input_saved_by_layer(x, copies) else 0
        in_layers = layers + embeddings + top - shared
        cache = x.L * (casts.layer_saved + casts.layer_cached) + head_cached
        if offload:
            kept = (0 if loss_part.releases_head_input else casts.head_saved) + (
                0 if x.frozen or loss_part.releases_head_input else x.D * x.bsh)
            moved = offloaded(x, head - kept, rule.head_norm_repeats(x), not x.frozen)
            layers = rule.checkpoint_held(x) + moved.stash + moved.kept
            head, host = kept, moved.host
            in_layers = rule.checkpoint_held(x) + embeddings + x.R * x.bsh + top - shared
    else:
        layers, recompute = x.L * per_layer - discount, 0
        lora = x.L * lora_layer - casts.first_cached - first_dropped
        in_layers = layers - per_layer + embeddings + lora - lora_layer + top
        cache = x.L * casts.layer_cached + casts.first_cached + head_cached
    total = layers + embeddings + head + loss_part.saved + lora + cache
    start = total - cache + loss_part.backward - loss_part.saved
    # the final norm's backward, the loss's tensors released (a fused loss leaves little behind)
    head_back = total - cache - loss_part.saved + rule.head_backward(x)
    return ActivationBreakdown(per_layer, layers, recompute, embeddings, head, loss_part.saved,
                               lora, total, max(start, in_layers, head_back), cache,
                               total - loss_part.saved + loss_part.forward, host)


def _loss(x: Dims, model: ModelConfig, rule, autocast: bool, kind: str, impl_id, chunks,
          chunk_size, head_dtype: str):
    """The loss record's bytes for this step (`planner.loss`)."""
    impl = get_loss_impl(kind, impl_id)
    if impl.kind != "full" and not rule.causal_loss_upcast:
        raise ValueError(f"{model.name} is not a causal LM: chunked and fused losses split a causal "
                         "LM's output layer; use --loss full")
    rows = chunk_rows(impl, x.b, x.s, x.V, x.h, chunks, chunk_size)
    ctx = LossContext(upcast=rule.causal_loss_upcast and impl.explicit_upcast,
                      autocast=autocast and impl.in_autocast,
                      rows=rows, head_trains=not x.frozen,
                      W=_compute_bytes(head_dtype, "head_dtype"), cuda=x.cuda,
                      causal=rule.causal_loss_upcast, amp=autocast)
    return impl.rule(x, ctx)


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
          kernels: str, dropout: float | None, frozen: bool, checkpointing: bool, R: int = 0,
          autocast: bool = False, M: int = 0, as_is: bool = False) -> Dims:
    """The symbols, with dropouts from `dropout` or the config and the attention kernel; under
    autocast with an fp32 stream each trained linear saves its own copy of its input."""
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
    R = R or D
    cuda, copies = kernels == "cuda", R != D and not frozen and not as_is
    reads = (lambda key: amp.linear_reads(family, key)) if copies else (lambda key: 1)
    return Dims(batch, seq, model.hidden_size, model.intermediate_size,
                model.num_heads, model.num_kv_heads, model.head_dim, model.vocab_size,
                model.num_layers, D, 4 if cuda else D,
                mask if p_hidden > 0 else 0, mask if p_attn > 0 else 0, core,
                ACTIVATION_SAVES[act], frozen,
                bool(model.hf_config.get("use_cache", True)) and not checkpointing,
                R=R, attn_reads=reads("attn_in"), mlp_reads=reads("mlp_in"),
                m_stream=((1 if cuda else R) if p_hidden > 0 else 0), cuda=cuda,
                autocast_cuda=autocast and cuda,
                act_fp32=amp.CUDA_AUTOCAST_FP32_SAVES.get(act, 0) if autocast and cuda else 0, M=M,
                I=R if as_is else D)


def _lora_terms(x: Dims, model: ModelConfig, family: Family, rank: int, dropout: float,
                lora_dtype: str, kernels: str, targets, autocast: bool = False
                ) -> tuple[int, int, int, bool, amp.Casts]:
    """(adapter extras per layer, their backward gradients, layer 0's frozen-input saving,
    whether the adapters copy their inputs, autocast's casts of the adapters).

    Under autocast, adapters not in D are cast to D (`planner.amp`): A and B save D tensors (the
    D copy of A's input, A's output) and hold D casts of their weights; the dropout mask stays in
    the adapters' dtype; in backward A's input gradient (D) and its image through the cast
    (the adapters' dtype) are alive."""
    lora_d = _compute_bytes(lora_dtype, "lora_dtype")
    p = _probability("lora_dropout", dropout)
    lora_m = (1 if kernels == "cuda" else lora_d) if p > 0 else 0
    linears = adapted_linears(model, targets)
    if not linears:
        raise ValueError(f"no block linear of {model.name} matches the LoRA targets {', '.join(targets)}")
    first = first_layer(family, targets)
    frozen = frozen_input_bytes(x, family, linears, lora_m, first)
    if autocast and lora_d != x.D:
        saved = lora_layer_bytes(x, linears, rank, x.D, lora_m, adapted_linears(model), cast=True)
        grads = (x.D + lora_d) * x.bs * max(n for _, n in linears)
        casts = amp.weight_casts(model, x.D, trained=False,
                                 adapters=_adapter_elements(model, family, rank, targets, first))
        return saved, grads, frozen, True, casts
    return (lora_layer_bytes(x, linears, rank, lora_d, lora_m, adapted_linears(model)),
            lora_grad_bytes(x, linears, lora_d, lora_m), frozen,
            lora_d != x.D or lora_m > 0, amp.NO_CASTS)


def _adapter_elements(model: ModelConfig, family: Family, rank: int, targets,
                      first: FirstLayer) -> list[tuple[int, int, bool]]:
    """Per adapted linear of a layer: (A elements r·in, B elements out·r, whether A's input needs
    no gradient in layer 0: the attention input, and the MLP input when no attention adapter)."""
    frozen_inputs = {"attn_in"} | (set() if first.attention else {"mlp_in"})
    out = []
    for p in model.params:
        if p.role != "block_linear" or p.layer != 0:
            continue
        if targets is not None and p.module.rpartition(".")[2] not in targets:
            continue
        n_in = family.in_features(p.shape)
        n_out = p.numel // n_in
        out.append((rank * n_in, n_out * rank, family.linear_inputs.get(p.module) in frozen_inputs))
    return out
