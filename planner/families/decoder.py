"""The Llama-style decoder that most families share (transformers' `modeling_llama.py` and the
models generated from it: Mistral, Qwen2/3, Gemma 2/3, Phi-3): pre-norm RMSNorm blocks, rotary
attention with grouped-query heads, a gated MLP, an optional tied LM head.

A family record says what its decoder changes through `DecoderTraits` (norm placement and kind,
q/k norms, fused projections, soft-capping, scaled embeddings, residual dropout, layer types);
`decoder_shapes` and `decoder_activation` turn the traits into the record's shapes and
activation rule. The derivation, tensor by tensor, is in `planner/activations.py` and in each
function's docstring here and in `decoder_blocks.py`.
"""
from __future__ import annotations

from collections.abc import Callable

from ..activation_blocks import (Dims, FirstLayer, attention_bytes, first_layer_attention_discount,
                                 mlp_bytes, mlp_grad_bytes, rms_norm_bytes)
from .decoder_blocks import (LLAMA, DecoderTraits, attention_core_grad_bytes, attention_layer_bytes,
                             checkpoint_masks, final_softcap, kinds, layer_types, masked_kind,
                             norm_bytes, rotary_tables, rotary_width)
from .record import ActivationRule, ShapeRow
from .shapes import linear, norm

__all__ = ["decoder_shapes", "decoder_activation", "DecoderTraits", "LLAMA", "LLAMA_LINEAR_INPUTS",
           "LLAMA_ATTENTION_INPUTS", "LLAMA_ACTIVATION", "llama_layer_bytes", "linear_inputs",
           "attention_inputs", "decoder_fields", "attention_bias", "no_bias", "tiny_decoder"]

#: what each Llama-style linear reads (after the layer index)
LLAMA_LINEAR_INPUTS = {
    "self_attn.q_proj": "attn_in", "self_attn.k_proj": "attn_in", "self_attn.v_proj": "attn_in",
    "self_attn.o_proj": "ctx", "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in",
    "mlp.down_proj": "mlp_act"}
#: the modules producing q, k, v and consuming the attention output
LLAMA_ATTENTION_INPUTS = {"q": ("q_proj",), "k": ("k_proj",), "v": ("v_proj",), "o": ("o_proj",)}


def linear_inputs(t: DecoderTraits) -> dict[str, str]:
    """The record's `linear_inputs` for a decoder with traits `t` (fused projections read the
    same tensor as the projections they fuse)."""
    attn = ({"self_attn.qkv_proj": "attn_in"} if t.fused_qkv else
            {f"self_attn.{n}_proj": "attn_in" for n in "qkv"})
    mlp = ({"mlp.gate_up_proj": "mlp_in"} if t.fused_gate_up else
           {"mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in"})
    return {**attn, "self_attn.o_proj": "ctx", **mlp, "mlp.down_proj": "mlp_act"}


def attention_inputs(t: DecoderTraits) -> dict[str, tuple[str, ...]]:
    """q / k / v / o -> the module producing or consuming it (qkv_proj produces all three)."""
    if t.fused_qkv:
        return {"q": ("qkv_proj",), "k": ("qkv_proj",), "v": ("qkv_proj",), "o": ("o_proj",)}
    return dict(LLAMA_ATTENTION_INPUTS)


def decoder_shapes(c: dict, biases: Callable[[dict], tuple[bool, bool, bool]],
                   traits: DecoderTraits = LLAMA) -> list[ShapeRow]:
    """embed_tokens, L x (attention projections, q/k norms, MLP projections, 2 or 4 RMSNorms),
    final norm, lm_head unless tied, in transformers' parameter order. `biases(c)` -> (q/k/v
    bias, o bias, MLP bias). Fused projections stack their parts' rows: qkv_proj (a + 2k)·d,
    gate_up_proj 2i (`Phi3Attention`, `Phi3MLP`)."""
    h, hd, v, i = c["hidden_size"], c["head_dim"], c["vocab_size"], c["intermediate_size"]
    qkv_bias, o_bias, mlp_bias = biases(c)
    q, kv = c["num_heads"] * hd, c["num_kv_heads"] * hd
    rows = [("model.embed_tokens.weight", (v, h), "Embedding")]
    for layer in range(c["num_layers"]):
        p = f"model.layers.{layer}"
        a = f"{p}.self_attn"
        if traits.fused_qkv:    # Phi3Attention creates o_proj first
            attn = linear(f"{a}.o_proj", h, q, o_bias) + linear(f"{a}.qkv_proj", q + 2 * kv, h, qkv_bias)
        else:
            attn = (linear(f"{a}.q_proj", q, h, qkv_bias) + linear(f"{a}.k_proj", kv, h, qkv_bias)
                    + linear(f"{a}.v_proj", kv, h, qkv_bias) + linear(f"{a}.o_proj", h, q, o_bias))
        if traits.qk_norm:
            attn += norm(f"{a}.q_norm", hd, False, "RMSNorm") + norm(f"{a}.k_norm", hd, False, "RMSNorm")
        mlp = (linear(f"{p}.mlp.gate_up_proj", 2 * i, h, mlp_bias) if traits.fused_gate_up else
               linear(f"{p}.mlp.gate_proj", i, h, mlp_bias) + linear(f"{p}.mlp.up_proj", i, h, mlp_bias))
        mlp += linear(f"{p}.mlp.down_proj", h, i, mlp_bias)
        norms = ("input_layernorm", "post_attention_layernorm") + (
            ("pre_feedforward_layernorm", "post_feedforward_layernorm") if traits.sandwich_norms else ())
        rows += attn + mlp + [r for n in norms for r in norm(f"{p}.{n}", h, False, "RMSNorm")]
    rows += norm("model.norm", h, False, "RMSNorm")
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.weight", (v, h), "Linear")])


def llama_layer_bytes(x: Dims) -> int:
    """LlamaDecoderLayer: 2 RMSNorms, attention (fp32 softmax), SwiGLU MLP. Residual adds save
    nothing; rotary's cos/sin are shared by all layers (`embeddings`). Full fine-tune, flash,
    k = a, a·d = h: fp32 40bsh + 16bsi + 8bs + 4bas; bf16 24bsh + 8bsi + 8bs + 4bas."""
    return 2 * rms_norm_bytes(x) + attention_bytes(x, softmax_fp32=True) + mlp_bytes(x, True)


def decoder_activation(t: DecoderTraits) -> ActivationRule:
    """The activation rule of a decoder with traits `t` (each term in `decoder_blocks`)."""

    def kind_bytes(x: Dims, masked: bool) -> int:
        """One layer: its norms (2, or Gemma's 4), attention (q/k norms, soft-capping, a
        sliding-window mask under SDPA), gated MLP, and residual-dropout masks (Phi-3)."""
        n = 4 if t.sandwich_norms else 2
        return (n * norm_bytes(x, t) + attention_layer_bytes(x, t, masked) + mlp_bytes(x, gated=True)
                + (2 * x.m_hidden * x.bsh if t.residual_dropout else 0))

    def layer(x: Dims) -> int:
        return max(kind_bytes(x, m) for m in kinds(x, t))

    def stack(x: Dims) -> int:
        return sum(count * kind_bytes(x, m) for m, count in kinds(x, t).items())

    def embeddings(x: Dims, checkpointing: bool) -> int:
        """Rotary cos and sin, (1, s, d_rot) in the stream's dtype R (the embeddings'), one pair per rotary table the layers use
        (Gemma 3: one per layer type), shared by every layer: 2·R·s·d_rot each. Gemma's
        embedding scale, a 0-dim buffer cast to D, is saved by the `*` when the embeddings
        train and D ≠ fp32 (the buffer itself otherwise)."""
        scale = x.D if t.embed_scale and not x.frozen and x.D != 4 else 0
        return rotary_tables(x, t) * 2 * x.R * x.s * rotary_width(x, t) + scale

    def head(x: Dims) -> int:
        """The final norm, lm_head's input D·bsh (a frozen head saves none) and, with final
        logit soft-capping (Gemma 2), the tanh output D·bsV that its backward reads."""
        return (norm_bytes(x, t) + (0 if x.frozen else x.D * x.bsh)
                + (x.D * x.bs * x.V if final_softcap(x, t) else 0))

    def backward_phases(x: Dims, lora_saved: int, lora_grads: int) -> list[int]:
        """The last layer's backward. The MLP's runs first, with everything saved: the gated
        MLP's gradients, 2·D·bsi net of the released down_proj input (or before them the last
        linear's adapter gradients). A norm's backward, once what follows it is released,
        holds five fp32 b·s·h temporaries (`pow_backward`'s 2·x chain, the mean's expanded
        gradient, the product's gradients); Gemma's post-feedforward norm, first of all, holds
        three (x̂'s and (1 + w)'s product gradients and the rsqrt chain's) and in 16 bits the
        gradient's fp32 copy. The attention backward runs once the MLP, its norms and masks
        are released, with the pre-attention norm (and the q/k norms) still saved.

        The last layer is of its own kind (Gemma's global or sliding); a layer of the other
        kind before it runs its backward once at least the last layer's output gradient
        (D·bsh, a checkpoint's input) is released."""
        last = masked_kind(x, t, layer_types(x, t)[-1])
        phases = kind_phases(x, last, lora_saved, lora_grads)
        for other in set(kinds(x, t)) - {last}:
            phases += [p - x.D * x.bsh for p in kind_phases(x, other, lora_saved, lora_grads)]
        return phases

    def kind_phases(x: Dims, masked: bool, lora_saved: int, lora_grads: int) -> list[int]:
        per_layer = kind_bytes(x, masked)
        mlp = mlp_bytes(x, gated=True)
        pre_attention = attention_layer_bytes(x, t, masked) + norm_bytes(x, t)
        phases = [per_layer + lora_saved + max(mlp_grad_bytes(x, gated=True), lora_grads),
                  pre_attention + attention_core_grad_bytes(x, t),
                  per_layer - mlp + 5 * 4 * x.bsh]
        if t.sandwich_norms:
            phases.append(per_layer + (3 + (x.D != 4)) * 4 * x.bsh)
        return phases

    def frozen_first_layer(x: Dims, g: FirstLayer) -> int:
        """Layer 0 with a frozen input keeps no pre-attention norm (its fp32 input copy and
        rsqrt), no q/k norm whose projection carries no adapter, nothing of an attention no
        adapter touches (its soft-capping tanh, mask and copies included), and without an
        adapter in the attention none of the norms between it and the MLP (1 for Llama, 2 for
        Gemma's sandwich)."""
        frozen = norm_bytes(x, t)
        between = (0 if g.attention else 2 if t.sandwich_norms else 1) * frozen
        if not (g.q or g.k or g.v):
            masked = masked_kind(x, t, layer_types(x, t)[0])
            # o_proj's input stays if an adapter reads it; the adapter rule releases it if the
            # kernel does not keep it itself
            kept_ctx = x.D * x.bs * x.a * x.d if (g.o or not ctx_kept(x)) else 0
            return frozen + attention_layer_bytes(x, t, masked) - x.D * x.bsh - kept_ctx + between
        qk = 0
        if t.qk_norm:
            qk = ((0 if g.q else norm_bytes(x, t, rows=x.bs * x.a, width=x.d))
                  + (0 if g.k else norm_bytes(x, t, rows=x.bs * x.k, width=x.d)))
        return frozen + qk + first_layer_attention_discount(x, g, softmax_fp32=True) + between

    def ctx_kept(x: Dims) -> bool:
        """Whether the flash kernel's saved output is o_proj's input itself: not when Phi-3's
        SDPA output, laid out like q, is copied into it."""
        return x.core == "flash" and not (t.rotary_cat and x.attention == "sdpa")

    def checkpoint_held(x: Dims) -> int:
        """The masks each checkpointed layer receives (eager: an additive (b, 1, s, s) mask in
        D per layer type; SDPA: a bool sliding-window mask when s reaches the window) and the
        position ids, int64 (1, s), passed to every layer."""
        return checkpoint_masks(x, t) + 8 * x.s

    return ActivationRule(
        layer=layer, embeddings=embeddings, head=head, backward_phases=backward_phases,
        checkpoint_held=checkpoint_held,
        # the input norm's `x.to(fp32)` is the input itself only in an fp32 stream
        input_saved_by_layer=lambda x, adapters_copy_input: x.R == 4,
        frozen_first_layer=frozen_first_layer, head_norm_repeats=lambda x: 4 * x.bsh,
        # the final norm's backward: its input's gradient and five fp32 b·s·h temporaries
        head_backward=lambda x: x.R * x.bsh + 5 * 4 * x.bsh,
        stack=stack if t.layer_types is not None else None,
        ctx_kept=ctx_kept)


LLAMA_ACTIVATION = decoder_activation(LLAMA)


def tiny_decoder(model_type: str, **fields) -> dict:
    """A decoder family's `example`: 2 layers, hidden 64, MLP 176, 4 query heads over 2 KV
    heads, vocabulary 1000, 256 positions, an untied head, with the family's own `fields` on top."""
    return dict(model_type=model_type, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                max_position_embeddings=256, tie_word_embeddings=False) | fields


def attention_bias(c: dict) -> tuple[bool, bool, bool]:
    """`attention_bias` (default false) on q, k, v and o; no MLP bias (Gemma 2/3, Qwen3)."""
    bias = bool(c.get("attention_bias", False))
    return bias, bias, False


def no_bias(c: dict) -> tuple[bool, bool, bool]:
    """No bias anywhere (Mistral, Phi-3)."""
    return False, False, False


def decoder_fields(traits: DecoderTraits, biases: Callable[[dict], tuple[bool, bool, bool]],
                   activation: ActivationRule | None = None) -> dict:
    """The `Family` fields a Llama-style decoder derives from its traits: `shapes` (with
    `biases(c)` -> (q/k/v, o, MLP bias)), the activation rule (`activation` where the family's
    own rule builds on the traits' one), `linear_inputs` and `attention_inputs`. A record spreads
    them: `Family(name=..., **decoder_fields(TRAITS, attention_bias), ...)`."""
    return dict(shapes=lambda c: decoder_shapes(c, biases, traits),
                activation=activation or (LLAMA_ACTIVATION if traits is LLAMA else decoder_activation(traits)),
                linear_inputs=linear_inputs(traits), attention_inputs=attention_inputs(traits))
