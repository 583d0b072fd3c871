"""GPT-NeoX / Pythia: transformers' `modeling_gpt_neox.py`.

Pre-LN blocks with biased LayerNorms; one fused `query_key_value` linear ((b, s, a, 3d) per head:
q, k and v are chunks of each head's slice); rotary on the first `rotary_pct` of each head's
dims (Pythia: 0.25); a GELU MLP; with `use_parallel_residual` (Pythia's and the class default)
attention and MLP both read the layer input, `x + attn(ln1(x)) + mlp(ln2(x))`, otherwise the
MLP reads the attention's residual sum. The LM head (`embed_out` in the checkpoints, `lm_head`
in transformers 5) is untied.
"""
from __future__ import annotations

from dataclasses import replace

from ..activation_blocks import (Dims, FirstLayer, attention_bytes, attention_grad_bytes,
                                 first_layer_attention_discount, layer_norm_bytes,
                                 layer_norm_head_bytes, mlp_bytes, mlp_grad_bytes)
from .options import flag, fraction
from .record import ActivationRule, Family
from .shapes import linear, norm

__all__ = ["FAMILY"]


def _shapes(c: dict) -> list:
    h, v, inner = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    bias = bool(c.get("attention_bias", True))
    rows = [("gpt_neox.embed_in.weight", (v, h), "Embedding")]
    for i in range(c["num_layers"]):
        p = f"gpt_neox.layers.{i}"
        rows += (norm(f"{p}.input_layernorm", h, True, "LayerNorm")
                 + norm(f"{p}.post_attention_layernorm", h, True, "LayerNorm")
                 + linear(f"{p}.attention.query_key_value", 3 * h, h, bias)
                 + linear(f"{p}.attention.dense", h, h, bias)
                 + linear(f"{p}.mlp.dense_h_to_4h", inner, h, True)
                 + linear(f"{p}.mlp.dense_4h_to_h", h, inner, True))
    rows += norm("gpt_neox.final_layer_norm", h, True, "LayerNorm")
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.weight", (v, h), "Linear")])


def _options(c: dict) -> dict:
    """`rotary_pct` (old spelling, Pythia's configs) or `rope_parameters.partial_rotary_factor`,
    which wins as in `GPTNeoXConfig.convert_rope_params_to_dict`; `use_parallel_residual`."""
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ValueError(f"field 'rope_parameters' must be an object, got {rope!r:.40}")
    key = "rope_parameters.partial_rotary_factor" if "partial_rotary_factor" in rope else "rotary_pct"
    pct = fraction(c, key, rope.get("partial_rotary_factor", c.get("rotary_pct")), 0.25)
    return {"rotary_pct": pct, "parallel": flag(c, "use_parallel_residual", True)}


def _extra_attention(x: Dims) -> int:
    """What NeoX's attention saves beyond `attention_bytes`.

    q and k leave the rotary as fresh (b, a, s, d) tensors (`torch.cat` of the rotated and passed
    parts), so SDPA-flash lays its output out (b, a, s, d) as well and `transpose(1, 2)
    .contiguous()` copies it: dense's input ctx is a copy, D·bsh. Without a DynamicCache (no
    `use_cache`, or checkpointing) v stays a view of the fused q/k/v output, and SDPA-flash saves
    that view, keeping all of it, 3·D·bsh, alive instead of the cache's contiguous copy of v:
    +2·D·bsh. (Eager attention's `matmul` copies the strided v itself, and its ctx copy is
    `attention_bytes`'.)
    """
    if x.core != "flash":           # eager's matmul copies the strided v: as the cache's copy
        return 0
    return x.D * x.bsh + (0 if x.kv_cache else 2 * x.D * x.bsh)


def _attention(x: Dims) -> int:
    """input_layernorm's output (query_key_value's input), the core with Llama's fp32 softmax,
    the ctx copy and the cache-less v view."""
    return attention_bytes(x, softmax_fp32=True) + _extra_attention(x)


def _layer(x: Dims) -> int:
    """GPTNeoXLayer: input_layernorm saves the layer input (D·bsh) and its stats; attention;
    post_attention_dropout's mask; post_attention_layernorm reads the layer input again under the
    parallel residual (only its stats are new) or the residual sum (D·bsh more) otherwise; the
    GELU MLP; post_mlp_dropout's mask. The rotary's cos/sin are shared (`_embeddings`); the
    rotation itself saves nothing but them (cos and sin need no gradient).

    Pythia (parallel, exact GELU, i = 4h, cache on, flash, no dropout): 16·D·bsh + 4t·bs + 4bas.
    """
    ln2 = 2 * x.t * x.bs if x.opt("parallel", True) else layer_norm_bytes(x)
    return (layer_norm_bytes(x) + _attention(x) + ln2 + mlp_bytes(x, gated=False)
            + 2 * x.m_hidden * x.bsh)


def _rotary_dims(x: Dims) -> int:
    return int(x.d * x.opt("rotary_pct", 0.25))


def _embeddings(x: Dims, checkpointing: bool) -> int:
    """Rotary cos and sin, (1, s, r) in D for the r = d·rotary_pct rotated dims, shared by every
    layer; emb_dropout's mask. With frozen embeddings and checkpointing the embeddings' output
    is a leaf that requires grad, held (D·bsh) besides the dropped copy layer 0 reads; without
    dropout it is layer 0's input itself (a checkpoint's, counted there). Frozen, without
    checkpointing, the mask is not saved."""
    rotary = 2 * x.D * x.s * _rotary_dims(x)
    if x.frozen:
        return rotary + ((x.D + x.m_hidden) * x.bsh if checkpointing and x.m_hidden else 0)
    return rotary + x.m_hidden * x.bsh


def _backward_phases(x: Dims, lora_saved: int, lora_grads: int) -> list[int]:
    """The MLP branch's backward runs first (created last, in either residual form), with
    everything saved; then the attention's, with input_layernorm's saved tensors still alive.

    The GELU's gradients are net of dense_4h_to_h's released input, which a frozen (adapter
    base) dense_4h_to_h never saved (the adapter rule releases it): then both b·s·i gradients
    count, D·bsi more."""
    mlp_grads = mlp_grad_bytes(x, gated=False) + (x.D * x.bs * x.i if x.frozen else 0)
    return [_layer(x) + lora_saved + max(mlp_grads, lora_grads),
            _attention(x) + layer_norm_bytes(x) + attention_grad_bytes(x, softmax_fp32=True)]


def _frozen_first_layer(x: Dims, g: FirstLayer) -> int:
    """Layer 0 with a frozen input: input_layernorm keeps nothing, nor does the attention core
    unless an adapter on query_key_value makes q, k, v need a gradient (then nothing of the
    core is spared under flash); the ctx copy is the adapter rule's (released or read). Without
    an attention adapter the attention output needs no gradient: no dropout mask. The MLP branch
    reads the frozen input under the parallel residual (the attention's output otherwise):
    post_attention_layernorm then keeps nothing, and without an adapter on dense_h_to_4h
    neither does the GELU nor the MLP's dropout."""
    parallel = x.opt("parallel", True)
    core = first_layer_attention_discount(x, replace(g, o=False), softmax_fp32=True)
    if not (g.q or g.k or g.v) and not x.kv_cache:
        core += 2 * x.D * x.bsh
    mlp_input_frozen = parallel or not g.attention
    ln2 = (2 * x.t * x.bs if parallel else layer_norm_bytes(x)) if mlp_input_frozen else 0
    mlp = x.act_saves * x.D * x.bs * x.i + x.m_hidden * x.bsh if mlp_input_frozen and not g.mlp else 0
    attention_out = 0 if g.attention else x.m_hidden * x.bsh
    return layer_norm_bytes(x) + core + ln2 + mlp + attention_out


FAMILY = Family(
    name="gpt_neox", model_types=("gpt_neox",),
    summary="GPT-NeoX / Pythia: LayerNorm, fused q/k/v, partial rotary, parallel residual, GELU MLP",
    head_class="AutoModelForCausalLM", shapes=_shapes,
    activation=ActivationRule(
        layer=_layer, embeddings=_embeddings,
        head=layer_norm_head_bytes,
        backward_phases=_backward_phases,
        # eager causal attention's additive mask (b, 1, s, s); the position ids every layer gets
        checkpoint_held=lambda x: (x.D * x.b * x.s * x.s if x.core == "eager" else 0) + 8 * x.s,
        input_saved_by_layer=lambda x, adapters_copy_input: True,   # input_layernorm saves it
        frozen_first_layer=_frozen_first_layer,
        ctx_kept=lambda x: False),
    linear_inputs={"attention.query_key_value": "attn_in", "attention.dense": "ctx",
                   "mlp.dense_h_to_4h": "mlp_in", "mlp.dense_4h_to_h": "mlp_act"},
    lora_default_targets=("query_key_value",),
    attention_inputs={"q": ("query_key_value",), "k": ("query_key_value",),
                      "v": ("query_key_value",), "o": ("dense",)},
    example=dict(model_type="gpt_neox", hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, vocab_size=1000, max_position_embeddings=256,
                 rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False),
    act_field=("hidden_act", "gelu"),
    dropout_fields=(("hidden_dropout", 0.0), ("attention_dropout", 0.0)),
    config_defaults={"intermediate_size": 24576, "max_position": 2048},
    block_options=_options,
    source="transformers/models/gpt_neox/modeling_gpt_neox.py")
