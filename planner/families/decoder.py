"""The Llama-style decoder that several families share (transformers' `modeling_llama.py` and
the models generated from it: Mistral, Qwen2): pre-norm RMSNorm blocks, rotary attention with
grouped-query heads, a SwiGLU MLP, an optional tied LM head.

Shapes and activation formulas here take the normalised config; a family record supplies what
differs (which projections carry biases) and composes the rule. The activation derivation,
tensor by tensor, is in `planner/activations.py` and in each function's docstring.
"""
from __future__ import annotations

from collections.abc import Callable

from ..activation_blocks import (Dims, FirstLayer, attention_bytes, attention_grad_bytes,
                                 first_layer_attention_discount, mlp_bytes, mlp_grad_bytes,
                                 rms_norm_bytes)
from .record import ActivationRule, ShapeRow
from .shapes import linear, norm

__all__ = ["decoder_shapes", "LLAMA_LINEAR_INPUTS", "LLAMA_ATTENTION_INPUTS", "LLAMA_ACTIVATION",
           "llama_layer_bytes"]

#: what each Llama-style linear reads (after the layer index)
LLAMA_LINEAR_INPUTS = {
    "self_attn.q_proj": "attn_in", "self_attn.k_proj": "attn_in", "self_attn.v_proj": "attn_in",
    "self_attn.o_proj": "ctx", "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in",
    "mlp.down_proj": "mlp_act"}
#: the modules producing q, k, v and consuming the attention output
LLAMA_ATTENTION_INPUTS = {"q": ("q_proj",), "k": ("k_proj",), "v": ("v_proj",), "o": ("o_proj",)}


def decoder_shapes(c: dict, biases: Callable[[dict], tuple[bool, bool, bool]]) -> list[ShapeRow]:
    """embed_tokens, L x (q, k, v, o, gate, up, down, 2 RMSNorms), final norm, lm_head unless
    tied. `biases(c)` -> (q/k/v bias, o bias, MLP bias)."""
    h, hd, v, i = c["hidden_size"], c["head_dim"], c["vocab_size"], c["intermediate_size"]
    qkv_bias, o_bias, mlp_bias = biases(c)
    rows = [("model.embed_tokens.weight", (v, h), "Embedding")]
    for layer in range(c["num_layers"]):
        p = f"model.layers.{layer}"
        rows += (linear(f"{p}.self_attn.q_proj", c["num_heads"] * hd, h, qkv_bias)
                 + linear(f"{p}.self_attn.k_proj", c["num_kv_heads"] * hd, h, qkv_bias)
                 + linear(f"{p}.self_attn.v_proj", c["num_kv_heads"] * hd, h, qkv_bias)
                 + linear(f"{p}.self_attn.o_proj", h, c["num_heads"] * hd, o_bias)
                 + linear(f"{p}.mlp.gate_proj", i, h, mlp_bias)
                 + linear(f"{p}.mlp.up_proj", i, h, mlp_bias)
                 + linear(f"{p}.mlp.down_proj", h, i, mlp_bias)
                 + norm(f"{p}.input_layernorm", h, False, "RMSNorm")
                 + norm(f"{p}.post_attention_layernorm", h, False, "RMSNorm"))
    rows += norm("model.norm", h, False, "RMSNorm")
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.weight", (v, h), "Linear")])


def llama_layer_bytes(x: Dims) -> int:
    """LlamaDecoderLayer: 2 RMSNorms, attention (fp32 softmax), SwiGLU MLP. Residual adds save
    nothing; rotary's cos/sin are shared by all layers (`embeddings`). Full fine-tune, flash,
    k = a, a·d = h: fp32 40bsh + 16bsi + 8bs + 4bas; bf16 24bsh + 8bsi + 8bs + 4bas."""
    return 2 * rms_norm_bytes(x) + attention_bytes(x, softmax_fp32=True) + mlp_bytes(x, True)


def _embeddings(x: Dims, checkpointing: bool) -> int:
    """Rotary cos and sin, (1, s, d) in the stream's dtype (the embeddings'), shared by every
    layer: 2·R·s·d."""
    return 2 * x.R * x.s * x.d


def _head(x: Dims) -> int:
    """The final RMSNorm and lm_head's input D·bsh (a frozen head saves no input)."""
    return rms_norm_bytes(x) + (0 if x.frozen else x.D * x.bsh)


def _backward_phases(x: Dims, lora_saved: int, lora_grads: int) -> list[int]:
    """The MLP's backward runs first, with everything saved: SwiGLU's gradients, 2·D·bsi net of
    the released down_proj input (or before them the last linear's adapter gradients). The
    post-attention RMSNorm backward, after the MLP's release, holds five fp32 b·s·h temporaries
    (`pow_backward`'s 2·x chain, the mean's expanded gradient, the product's gradients). The
    attention backward runs once the MLP, its norm and masks are released."""
    per_layer = llama_layer_bytes(x)
    pre_attention = attention_bytes(x, softmax_fp32=True) + rms_norm_bytes(x)
    return [per_layer + lora_saved + max(mlp_grad_bytes(x, gated=True), lora_grads),
            pre_attention + attention_grad_bytes(x, softmax_fp32=True),
            per_layer - mlp_bytes(x, gated=True) + 5 * 4 * x.bsh]


def _frozen_first_layer(x: Dims, g: FirstLayer) -> int:
    """Layer 0 with a frozen input keeps no pre-attention RMSNorm (its fp32 input copy and
    rsqrt), nothing of an attention no adapter touches, and then no post-attention RMSNorm."""
    frozen_norm = 4 * x.bsh + 4 * x.bs
    return (frozen_norm + first_layer_attention_discount(x, g, softmax_fp32=True)
            + (0 if g.attention else frozen_norm))


def _checkpoint_held(x: Dims) -> int:
    """Eager causal attention's additive mask, (b, 1, s, s) in the stream's dtype (SDPA gets
    `is_causal`), and the position ids, int64 (1, s), passed to every layer."""
    return (x.R * x.b * x.s * x.s if x.core == "eager" else 0) + 8 * x.s


LLAMA_ACTIVATION = ActivationRule(
    layer=llama_layer_bytes, embeddings=_embeddings, head=_head, backward_phases=_backward_phases,
    checkpoint_held=_checkpoint_held,
    # the input RMSNorm's `x.to(fp32)` is the input itself only in an fp32 stream
    input_saved_by_layer=lambda x, adapters_copy_input: x.R == 4,
    frozen_first_layer=_frozen_first_layer, head_norm_repeats=lambda x: 4 * x.bsh,
    # the final RMSNorm's backward: its input's gradient and five fp32 b·s·h temporaries
    head_backward=lambda x: x.R * x.bsh + 5 * 4 * x.bsh)
