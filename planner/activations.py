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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

from . import adapter_activations, amp
from .activation_blocks import Dims, FirstLayer
from .adapter_activations import AdaptedLinear, AdapterDims
from .bases import get_base
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
    autocast_cache: int = 0
    peak_forward: int = 0
    host: int = 0
    source: str = "analytic"
    instants: tuple[int, int, int] | None = None

    @property
    def peak(self) -> int:
        """Activation-side bytes at the step's peak, to add to weights, gradients and states."""
        return max(self.total, self.peak_forward, self.peak_backward)

    def as_dict(self) -> dict[str, int]:
        return ({f.name: getattr(self, f.name) for f in fields(self)
                 if f.name not in ("source", "instants")} | {"peak": self.peak})


def adapted_linears(model: ModelConfig, targets: tuple[str, ...] | None = None,
                    rank: int | Mapping[str, int] = 1) -> list[AdaptedLinear]:
    """Layer 0's linears an adapter method adapts: the `block_linear` parameters whose module
    name ends with one of `targets` (None: all of them), with the tensor each reads (the family
    record says), its width and its rank (`rank`: one for all, or per module path)."""
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
        n = family.in_features(p.shape)
        r = rank.get(p.module, 1) if isinstance(rank, Mapping) else rank
        out.append(AdaptedLinear(p.module, family.linear_inputs[p.module], n, p.numel // n, r))
    return out


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
                      quantized_linears: bool = False,
                      adapter_rule: Callable | None = None,
                      lora_ranks: Mapping[str, int] | None = None,
                      modules_to_save: tuple[str, ...] = (), base_quant: str = "none"
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
    adapter_rule: the method's rule (`planner.adapter_activations`; default LoRA's); lora_ranks:
    a rank per module path ("self_attn.q_proj": 32; WeLore's) instead of one. `lora_targets`
    may name the embedding or the output layer (LoRA on them, peft's `lora.Embedding` /
    `lora.Linear`); modules_to_save: modules trained in full (a trained output layer saves its
    input; a trained embedding makes layer 0's input need a gradient). base_quant: the frozen
    base's format (`planner.bases`: an LLM.int8 base keeps its linears' inputs).

    `peak_backward` is the larger of two moments: the backward's start (`total` plus the loss
    gradients) and the last layer's backward (the stored layers plus that layer's saved or
    recomputed tensors and gradient peak, the head and loss tensors released by then);
    `peak_forward` is the loss's own forward peak.
    Raises ValueError, saying what to change, for an input it cannot model. An architecture
    without a family record is traced instead (`planner.traced`, imported only then).
    """
    if model.family is None:
        knobs = [name for name, on in (("autocast", autocast), ("a chunked or fused loss", loss != "full"),
                                       ("activation offloading", offload),
                                       ("an adapter method other than LoRA", adapter_rule not in (None, adapter_activations.lora)),
                                       ("modules_to_save", bool(modules_to_save)),
                                       ("a quantised base", base_quant != "none" or quantized_linears))
                 if on]
        if knobs:
            raise ValueError(f"{model.name} ({model.model_type}) has no family record, so its activations "
                             f"are traced for a plain LoRA or full fine-tuning step; {', '.join(knobs)} "
                             "is modelled for the families with a record only: drop it, or plan a "
                             "catalog model of a family memfit knows")
        from . import traced      # lazy: the one planner module that runs the profiler
        return traced.activation_memory(
            model, batch=batch, seq=seq, dtype=dtype, attention=attention,
            checkpointing=checkpointing, lora_rank=lora_rank, lora_dropout=lora_dropout,
            lora_dtype=lora_dtype, dropout=dropout, kernels=kernels, lora_targets=lora_targets)
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
    outside, kept = (0, 0), 0
    first_dropped = 0       # layer 0's frozen casts that nothing keeps (their input needs no gradient)
    if lora_rank is not None:
        lora_layer, lora_grads, discount, copies, outside, kept, casts = _adapter_terms(
            x, model, family, lora_rank, lora_dropout, lora_dtype or dtype, dtype, kernels, lora_targets,
            adapter_rule or adapter_activations.lora, lora_ranks, modules_to_save, base_quant,
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
    full_casts = 0 if lora_rank is not None else casts.layer_saved
    per_layer = rule.layer(x) + full_casts
    embeddings = rule.embeddings(x, full) + outside[0]
    head, head_cached = rule.head(x) + casts.head_saved + outside[1], casts.head_cached
    if loss_part.releases_head_input:       # the head's matmul ran inside the loss
        head -= casts.head_saved + (0 if x.frozen else x.D * x.bsh)
        # autocast caches casts of weights that require grad only: a frozen head's is transient
        head_cached += casts.head_saved if loss_part.caches_head_cast and not x.frozen else 0
    top = layer_backward_bytes(x, family, lora_layer, lora_grads) + full_casts   # the last layer in its backward
    host = 0
    if offload and not full:
        raise ValueError("activation offloading is modelled as torchtune runs it, with activation "
                         "checkpointing (its recipes require both): add --checkpointing full")
    if full:
        layers = x.L * (x.R * x.bsh + kept) + rule.checkpoint_held(x)
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
        stacked = rule.stack(x) + x.L * full_casts if rule.stack else x.L * per_layer
        layers, recompute = stacked - discount, 0
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
                attention=attention, options=tuple(sorted(family.block_options(model.hf_config).items())),
                config=model.hf_config, routing=family.routing(model.hf_config),
                R=R, attn_reads=reads("attn_in"), mlp_reads=reads("mlp_in"),
                m_stream=((1 if cuda else R) if p_hidden > 0 else 0), cuda=cuda,
                autocast_cuda=autocast and cuda,
                act_fp32=amp.CUDA_AUTOCAST_FP32_SAVES.get(act, 0) if autocast and cuda else 0, M=M,
                I=R if as_is else D)


def _adapter_terms(x: Dims, model: ModelConfig, family: Family, rank: int, dropout: float,
                   lora_dtype: str, x_dtype: str, kernels: str, targets, rule: Callable, ranks, saved,
                   base_quant: str, autocast: bool = False
                   ) -> tuple[int, int, int, bool, tuple[int, int], int, amp.Casts]:
    """(adapter extras per layer, their backward gradients, layer 0's frozen-input saving,
    whether the adapters copy their inputs, (extras before the stack, extras at the head),
    what each layer keeps through a checkpoint, autocast's casts of the adapters).

    Under autocast, adapters not in D are cast to D (`planner.amp`): A and B save D tensors (the
    D copy of A's input, A's output) and hold D casts of their weights; the dropout mask stays in
    the adapters' dtype; in backward A's input gradient (D) and its image through the cast
    (the adapters' dtype) are alive."""
    lora_d = _compute_bytes(lora_dtype, "lora_dtype")
    cast = canonical_dtype(lora_dtype) != canonical_dtype(x_dtype)
    p = _probability("lora_dropout", dropout)
    lora_m = (1 if kernels == "cuda" else lora_d) if p > 0 else 0
    linears = adapted_linears(model, targets, ranks if ranks is not None else rank)
    outer = _outer_modules(model, tuple(targets or ()), tuple(saved))
    # adapters on bare parameters (peft target_parameters: fused experts) are the record's rule
    param_saved, param_grads = family.activation.parameter_adapters(x, targets, rank, lora_d)
    if not linears and not outer["lora"] and not param_saved:
        raise ValueError(f"nothing of {model.name} matches the LoRA targets {', '.join(targets)}")
    first = first_layer(family, targets)
    embeddings_train = any(role == "embedding" for role in outer["lora"] + outer["saved"])
    # layer 0's inputs that need no gradient: the attention input, and the MLP input when no
    # attention projection carries an adapter
    frozen_inputs = frozenset({"attn_in"} | (set() if first.attention else {"mlp_in"}))
    frozen = frozenset() if embeddings_train else frozen_inputs
    norms_per_layer, norms_outside = _norm_modules(model)
    base = get_base(base_quant)
    trained_norm = (rule_layer_norm_bytes(x, family) // norms_per_layer) if norms_per_layer else 0
    cast_d = autocast and lora_d != x.D     # autocast casts the adapters to D
    a = AdapterDims(tuple(linears), tuple({(l.key, l.n) for l in adapted_linears(model)}),
                    x.D if cast_d else lora_d, lora_m, cast or cast_d, frozen, base.keeps_inputs,
                    base.weight is not None, trained_norm, norms_per_layer, norms_outside,
                    family.activation.ctx_kept(x),
                    lora_d if cast_d else 0)
    terms = rule(x, a)
    discount = terms.first + (0 if embeddings_train else family.activation.frozen_first_layer(x, first))
    before, head = _outer_bytes(x, outer, rank, lora_d, lora_m, cast)
    # per adapted linear: (A elements r·in, B elements out·r, whether A's input needs no gradient)
    casts = (amp.weight_casts(model, x.D, trained=False,
                              adapters=[(l.rank * l.n, l.m * l.rank, l.key in frozen_inputs) for l in linears])
             if cast_d else amp.NO_CASTS)
    return (terms.layer + param_saved, max(terms.grads, param_grads), discount, terms.copies or cast_d,
            (before, head + terms.outside), terms.kept, casts)


def rule_layer_norm_bytes(x: Dims, family: Family) -> int:
    """What a layer's norms add when their weights train: the family's layer with everything
    trainable minus the frozen one (its layer formula depends on `frozen` only through them:
    RMSNorm then saves its normalised input, LayerNorm saves the same either way)."""
    return family.activation.layer(replace(x, frozen=False)) - family.activation.layer(x)


def _norm_modules(model: ModelConfig) -> tuple[int, int]:
    """(norm modules in layer 0, norm modules outside the stack)."""
    owners = {(p.layer, p.name.rpartition(".")[0]) for p in model.params if p.role == "norm"}
    return (sum(1 for layer, _ in owners if layer == 0), sum(1 for layer, _ in owners if layer is None))


def _outer_modules(model: ModelConfig, targets: tuple[str, ...], saved: tuple[str, ...]
                   ) -> dict[str, list[str]]:
    """Roles of the embedding / output-layer modules among the LoRA targets ("lora") and the
    modules trained in full ("saved")."""
    out = {"lora": [], "saved": []}
    for p in model.params:
        if p.role in ("embedding", "lm_head") and p.name.endswith(".weight"):
            name = p.module.rpartition(".")[2]
            for key, names in (("lora", targets), ("saved", saved)):
                if name in names:
                    out[key].append(p.role)
    return out


def _outer_bytes(x: Dims, outer: dict[str, list[str]], rank: int, d: int, mask: int,
                 cast: bool) -> tuple[int, int]:
    """(saved before the stack, saved at the head) by adapters on, or full training of, the
    embedding and the output layer. LoRA on an embedding (peft `lora.Embedding`: A looked up
    like the table, then `@ B`) saves A's output, d·bs·r (the ids it reads are the input's own).
    LoRA on the output layer saves A's input (the final norm's output: D·bsh as it is, or its
    own copy (d + μ)·bsh) and A's output d·bs·r. A trained output layer saves its input, D·bsh;
    a trained embedding saves only the ids, which are the input's own."""
    before = sum(d * x.bs * rank for role in outer["lora"] if role == "embedding")
    head = 0
    for role in outer["lora"]:
        if role == "lm_head":
            head += d * x.bs * rank + (x.D * x.bsh if not cast and not mask else (d + mask) * x.bsh)
    head += sum(x.D * x.bsh for role in outer["saved"] if role == "lm_head")
    return before, head
