"""What a Llama-style decoder family changes, as traits, and the activation terms they imply.

Each term is what PyTorch 2.13's autograd saves for transformers 5.24's modeling files
(`modeling_llama.py`, `modeling_qwen3.py`, `modeling_gemma2.py`, `modeling_gemma3.py`,
`modeling_phi3.py`), listed tensor by tensor with `torch.autograd.graph.saved_tensors_hooks` and
checked end to end with MemTracker (tests/planner/test_activations_memtracker.py and
tests/planner/families/). Symbols as in `planner/activations.py`: S = b·a·s² attention scores.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..activation_blocks import Dims, attention_bytes, attention_grad_bytes

__all__ = ["DecoderTraits", "LLAMA", "norm_bytes", "attention_layer_bytes",
           "attention_core_grad_bytes", "kinds", "rotary_tables", "rotary_width", "final_softcap",
           "attn_softcap", "checkpoint_masks", "masked_kind", "config_value", "layer_types", "SLIDING", "FULL", "FIELD_RULES"]

SLIDING, FULL = "sliding_attention", "full_attention"
#: a config accessor: field name -> the config's value, else transformers' default
Get = Callable[[str], object]


@dataclass(frozen=True)
class DecoderTraits:
    """What a decoder family changes from Llama's.

    norm: "weight": `weight * x̂.to(D)` (LlamaRMSNorm, Qwen3, Phi-3); "offset": `x̂ * (1 + w)`
        computed in fp32, then cast (Gemma2RMSNorm / Gemma3RMSNorm).
    sandwich_norms: a norm after the attention and after the MLP besides the two before them
        (Gemma 2 and 3: input, post_attention, pre_feedforward, post_feedforward).
    qk_norm: an RMSNorm over head_dim on q and on k before rotary (Qwen3, Gemma 3).
    fused_qkv / fused_gate_up: one qkv_proj and one gate_up_proj (Phi-3).
    attn_softcap / final_softcap: the config fields of tanh soft-capping on the attention logits
        (Gemma 2; Gemma 3's modeling file never passes it) and on the final logits.
    embed_scale: the embeddings are multiplied by √h, a 0-dim buffer (Gemma).
    residual_dropout: dropout on both branch outputs before the residual adds (Phi-3's
        resid_pdrop).
    layer_types(get, L): transformers' default layer types ("sliding_attention" /
        "full_attention") when the config lists none; None: every layer global.
    window(get): the sliding window in effect (None: none).
    rotary_per_layer_type: one rotary table per layer type (Gemma 3: local and global bases).
    partial_rotary: rotary on `partial_rotary_factor`·d of each head (Phi-3 / Phi-4-mini).
    rotary_cat: rotary ends in `torch.cat([rotated, passed])` (Phi-3), a new q laid out
        (b, a, s, d), whose layout SDPA's output inherits.
    defaults: transformers' config-class defaults of the fields these rules read (a test keeps
        them equal to `AutoConfig.for_model`).
    """
    norm: str = "weight"
    sandwich_norms: bool = False
    qk_norm: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    attn_softcap: str | None = None
    final_softcap: str | None = None
    embed_scale: bool = False
    residual_dropout: bool = False
    layer_types: Callable[[Get, int], list[str]] | None = None
    window: Callable[[Get], int | None] = lambda get: get("sliding_window")
    rotary_per_layer_type: bool = False
    partial_rotary: bool = False
    rotary_cat: bool = False
    defaults: Mapping[str, object] = field(default_factory=dict)


LLAMA = DecoderTraits()


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: what each field the rules read must hold, and how a message says it
FIELD_RULES = {
    "sliding_window": (lambda v: v is None or _positive_int(v), "a positive integer or null"),
    "sliding_window_pattern": (_positive_int, "a positive integer"),
    "max_window_layers": (lambda v: _positive_int(v) or v == 0, "a non-negative integer"),
    "use_sliding_window": (lambda v: isinstance(v, bool), "true or false"),
    "attn_logit_softcapping": (lambda v: v is None or (_number(v) and v > 0), "a positive number or null"),
    "final_logit_softcapping": (lambda v: v is None or (_number(v) and v > 0), "a positive number or null"),
    "partial_rotary_factor": (lambda v: v is None or (_number(v) and 0 < v <= 1), "a number in (0, 1] or null"),
}


def config_value(x: Dims, t: DecoderTraits, key: str):
    """A config field the rule reads: the config's value (an explicit null included), else the
    family's transformers default. A value of the wrong kind raises ValueError naming it."""
    value = x.config[key] if key in x.config else t.defaults.get(key)
    ok, what = FIELD_RULES.get(key, (lambda v: True, ""))
    if not ok(value):
        raise ValueError(f"config field {key!r} must be {what}, got {value!r:.40}")
    return value


def layer_types(x: Dims, t: DecoderTraits) -> list[str]:
    """The L layers' types: the config's `layer_types` when it lists one per layer, else
    transformers' default for the family (every layer global without the trait)."""
    listed = x.config.get("layer_types")
    if listed is not None:
        if (not isinstance(listed, list) or len(listed) != x.L
                or not all(kind in (SLIDING, FULL) for kind in listed)):
            raise ValueError(f"config field 'layer_types' must list {x.L} entries, each "
                             f"{SLIDING!r} or {FULL!r}, got {listed!r:.80}")
        return list(listed)
    if t.layer_types is None:
        return [FULL] * x.L
    return t.layer_types(lambda key: config_value(x, t, key), x.L)


def _window(x: Dims, t: DecoderTraits) -> int | None:
    return t.window(lambda key: config_value(x, t, key))


def masked_kind(x: Dims, t: DecoderTraits, kind: str) -> bool:
    """Whether SDPA gets a materialised mask for a layer of this type: transformers skips the
    mask of an unpadded causal batch (`is_causal`) unless a sliding window applies, which it
    does once the sequence reaches the window (`masking_utils._ignore_causal_mask_sdpa`:
    `kv_length >= local_attention_size`). FlashAttention-2 takes the window as an argument."""
    window = _window(x, t)
    return (x.attention == "sdpa" and x.core == "flash" and kind == SLIDING
            and window is not None and x.s >= window)


def kinds(x: Dims, t: DecoderTraits) -> Counter:
    """How many layers take a materialised SDPA mask (True) and how many do not (False)."""
    return Counter(masked_kind(x, t, kind) for kind in layer_types(x, t))


def norm_bytes(x: Dims, t: DecoderTraits, rows: int | None = None, width: int | None = None) -> int:
    """One RMSNorm over `width` (h) on `rows` (b·s) rows: the residual stream's (rows None) or
    a q/k head's.

    weight (LlamaRMSNorm): `x.to(fp32)` (the input itself in fp32, a copy otherwise; saved by
    `pow` and the product), `rsqrt(var)` 4·rows, and `x̂.to(input dtype)` saved by `weight *`
    only if the weight trains: the stream's R (under autocast the embeddings' dtype), or D for
    q and k, matmul outputs: 4·rows·w + 4·rows (+ R or D·rows·w).
    offset (Gemma): the same fp32 input and rsqrt, the fp32 `(1 + w.float())` 4·w that the
    product saves for x̂'s gradient, and x̂ itself in fp32 (saved for w's gradient) when the
    weight trains: 4·rows·w + 4·rows + 4·w (+ 4·rows·w). The output's cast to D is the next
    op's input.
    """
    cast = x.R if rows is None else x.D
    rows = x.bs if rows is None else rows
    width = x.h if width is None else width
    base = 4 * rows * width + 4 * rows
    if t.norm == "offset":
        return base + 4 * width + (0 if x.frozen else 4 * rows * width)
    return base + (0 if x.frozen else cast * rows * width)


def attn_softcap(x: Dims, t: DecoderTraits) -> bool:
    return t.attn_softcap is not None and config_value(x, t, t.attn_softcap) is not None


def final_softcap(x: Dims, t: DecoderTraits) -> bool:
    return t.final_softcap is not None and config_value(x, t, t.final_softcap) is not None


def attention_layer_bytes(x: Dims, t: DecoderTraits, masked: bool) -> int:
    """Llama's attention (`activation_blocks.attention_bytes`, fp32 softmax) and what a family
    adds to it:

    * q/k norms: a norm over head_dim on b·s·a rows (q) and b·s·k rows (k);
    * eager soft-capping (`attn / cap`, `tanh`, `* cap`): tanh saves its output, D·S;
    * a materialised SDPA mask (sliding window): the kernel converts the bool mask to an
      additive one in D and saves it, D·b·s² per layer (the CPU flash kernel and CUDA's
      memory-efficient kernel alike: `convert_boolean_attn_mask` in ATen's attention.cpp; on
      CUDA for s a multiple of 16, else it is padded to (b, a, s, 16⌈s/16⌉)); and transformers
      passes GQA to SDPA only without a mask and for head_dim ≤ 256
      (`sdpa_attention.use_gqa_in_sdpa`), otherwise `repeat_kv` copies k and v to a heads:
      +2·D·bs·(a − k)·d;
    * fused q/k/v (Phi-3) without a KV cache (checkpointing turns it off): v reaches the flash
      kernel as a view of qkv_proj's output, so the saved v keeps that whole storage alive,
      +D·bs·(a + k)·d (a DynamicCache's `torch.cat` hands the kernel a contiguous copy instead;
      `repeat_kv` copies too);
    * q out of a `torch.cat` (Phi-3's rotary): SDPA's output is laid out (b, a, s, d) like q, so
      transformers' `.transpose(1, 2).contiguous()` copies it into o_proj's input, +D·bs·a·d
      (FlashAttention-2 returns (b, s, a, d) itself).
    """
    extra, qd = 0, x.bs * x.a * x.d
    if t.qk_norm:
        extra += norm_bytes(x, t, x.bs * x.a, x.d) + norm_bytes(x, t, x.bs * x.k, x.d)
    if x.core == "eager" and attn_softcap(x, t):
        extra += x.D * x.b * x.a * x.s * x.s
    repeated = (x.core == "flash" and x.attention == "sdpa" and (masked or x.d > 256)
                and x.k < x.a)
    if repeated:
        extra += 2 * x.D * x.bs * (x.a - x.k) * x.d
    if x.core == "flash" and t.fused_qkv and not x.kv_cache and not repeated:
        extra += x.D * x.bs * (x.a + x.k) * x.d
    if x.core == "flash" and t.rotary_cat and x.attention == "sdpa":
        extra += x.D * qd
    if masked:
        extra += x.D * x.b * x.s * x.s
    return attention_bytes(x, softmax_fp32=True) + extra


def attention_core_grad_bytes(x: Dims, t: DecoderTraits) -> int:
    """Gradients alive at the worst point of the attention core's backward: Llama's, and with
    eager soft-capping the tanh backward's input and output gradients, D·S each, while the
    fp32 softmax and its gradient are gone."""
    grads = attention_grad_bytes(x, softmax_fp32=True)
    if x.core == "eager" and attn_softcap(x, t):
        grads = max(grads, 2 * x.D * x.b * x.a * x.s * x.s)
    return grads


def rotary_tables(x: Dims, t: DecoderTraits) -> int:
    """How many (cos, sin) pairs the layers read: one, or one per layer type present."""
    return len(set(layer_types(x, t))) if t.rotary_per_layer_type else 1


def rotary_width(x: Dims, t: DecoderTraits) -> int:
    """The rotary part of a head: d, or int(d · partial_rotary_factor) (Phi3RotaryEmbedding)."""
    if not t.partial_rotary:
        return x.d
    factor = config_value(x, t, "partial_rotary_factor")
    rope = x.config.get("rope_parameters") or x.config.get("rope_scaling") or {}
    if factor is None and isinstance(rope, Mapping):
        factor = rope.get("partial_rotary_factor")
    return int(x.d * (1.0 if factor is None else factor))


def checkpoint_masks(x: Dims, t: DecoderTraits) -> int:
    """The masks that checkpointed layers receive as arguments, one per layer type present:
    eager's additive (b, 1, s, s) masks in the stream's dtype R; under SDPA only a sliding-window layer's bool
    mask (b·s² bytes), once the sequence reaches the window; none for FlashAttention-2."""
    present = set(layer_types(x, t))
    if x.core == "eager":
        return len(present) * x.R * x.b * x.s * x.s
    return x.s * x.s if any(masked_kind(x, t, kind) for kind in present) else 0
