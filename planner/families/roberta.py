"""RoBERTa (masked LM): transformers' `modeling_roberta.py`. Post-LN encoder blocks (attention,
dropout, LayerNorm of the residual sum; GELU MLP, dropout, LayerNorm), learned absolute position
and token-type embeddings, `RobertaLMHead` (dense, GELU, LayerNorm, decoder tied to the word
embeddings).
"""
from ..activation_blocks import (Dims, FirstLayer, attention_bytes, attention_grad_bytes,
                                 first_layer_attention_discount, layer_norm_bytes, mlp_bytes,
                                 mlp_grad_bytes)
from .record import ActivationRule, Family
from .shapes import linear, norm

__all__ = ["FAMILY", "encoder_layer_shapes", "encoder_layer_bytes", "ENCODER_LINEAR_INPUTS",
           "ENCODER_ATTENTION_INPUTS", "ENCODER_ACTIVATION", "encoder_backward_phases",
           "encoder_frozen_first_layer", "encoder_embeddings_bytes", "ENCODER_FIELDS"]

#: what each BERT-style linear reads (after the layer index)
ENCODER_LINEAR_INPUTS = {
    "attention.self.query": "attn_in", "attention.self.key": "attn_in",
    "attention.self.value": "attn_in", "attention.output.dense": "ctx",
    "intermediate.dense": "mlp_in", "output.dense": "mlp_act"}


def encoder_layer_shapes(p: str, h: int, inner: int) -> list:
    """One BERT-style encoder layer (RoBERTa's and BERT's are the same module tree)."""
    return (linear(f"{p}.attention.self.query", h, h, True)
            + linear(f"{p}.attention.self.key", h, h, True)
            + linear(f"{p}.attention.self.value", h, h, True)
            + linear(f"{p}.attention.output.dense", h, h, True)
            + norm(f"{p}.attention.output.LayerNorm", h, True, "LayerNorm")
            + linear(f"{p}.intermediate.dense", inner, h, True)
            + linear(f"{p}.output.dense", h, inner, True)
            + norm(f"{p}.output.LayerNorm", h, True, "LayerNorm"))


def _shapes(c: dict) -> list:
    h, v, inner = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    e = "roberta.embeddings"
    rows = [(f"{e}.word_embeddings.weight", (v, h), "Embedding"),
            (f"{e}.token_type_embeddings.weight", (c.get("type_vocab_size", 2), h), "Embedding"),
            *norm(f"{e}.LayerNorm", h, True, "LayerNorm"),
            (f"{e}.position_embeddings.weight", (c["max_position"], h), "Embedding")]
    for i in range(c["num_layers"]):
        rows += encoder_layer_shapes(f"roberta.encoder.layer.{i}", h, inner)
    rows += ([("lm_head.bias", (v,), "RobertaLMHead")] + linear("lm_head.dense", h, h, True)
             + norm("lm_head.layer_norm", h, True, "LayerNorm"))
    # untied, the decoder keeps its own weight and bias (tied, both are the embedding's and
    # lm_head.bias)
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.decoder.weight", (v, h), "Linear"),
                                                        ("lm_head.decoder.bias", (v,), "Linear")])


def encoder_layer_bytes(x: Dims) -> int:
    """A post-LN encoder layer: attention (its input is the layer input), dropout mask,
    LayerNorm(dense + input), MLP, dropout mask, LayerNorm(dense + residual)."""
    return (attention_bytes(x) + mlp_bytes(x, gated=False) + 2 * layer_norm_bytes(x)
            + 2 * x.m_hidden * x.bsh)


def encoder_embeddings_bytes(x: Dims, checkpointing: bool, ids: int | None = None) -> int:
    """The ids the position and token-type embeddings save (`ids` bytes; RoBERTa computes both
    per token from the input ids, int64 16bs), the embeddings LayerNorm's input and stats, its
    dropout mask. Frozen embeddings save no ids; without checkpointing nothing before the first
    layer needs a gradient, with it the embeddings' output is a leaf held (D·bsh)."""
    if x.frozen and not checkpointing:
        return 0
    ids = 16 * x.bs if ids is None else ids
    return ((0 if x.frozen else ids) + (x.R * x.bsh if x.frozen else 0)
            + layer_norm_bytes(x) + x.m_stream * x.bsh)


def encoder_backward_phases(x: Dims, lora_saved: int, lora_grads: int) -> list[int]:
    """The MLP's backward first, then the attention's (its input is the layer input)."""
    return [encoder_layer_bytes(x) + lora_saved + max(mlp_grad_bytes(x, gated=False), lora_grads),
            attention_bytes(x) + attention_grad_bytes(x)]


def encoder_frozen_first_layer(x: Dims, g: FirstLayer) -> int:
    """Layer 0 with a frozen input: nothing of an attention no adapter touches, and then neither
    the attention output's dropout mask nor its LayerNorm."""
    later = 0 if g.attention else x.m_hidden * x.bsh + layer_norm_bytes(x)
    return first_layer_attention_discount(x, g) + later


#: the modules producing q, k, v and consuming the attention output
ENCODER_ATTENTION_INPUTS = {"q": ("query",), "k": ("key",), "v": ("value",), "o": ("dense",)}

ENCODER_ACTIVATION = ActivationRule(
    layer=encoder_layer_bytes, embeddings=encoder_embeddings_bytes,
    # dense input, GELU input, LayerNorm input (GELU's output, D) and stats, decoder input
    head=lambda x: 2 * (0 if x.frozen else x.D * x.bsh) + x.D * x.bsh
    + layer_norm_bytes(x, stream=False),
    backward_phases=encoder_backward_phases,
    checkpoint_held=lambda x: 0,            # no causal mask, no position ids passed to layers
    # q/k/v save the layer input itself, unless adapters read a cast or dropped copy of it
    input_saved_by_layer=lambda x, adapters_copy_input: not adapters_copy_input,
    frozen_first_layer=encoder_frozen_first_layer, causal_loss_upcast=False)

#: the `Family` fields BERT-style masked LMs share (BertConfig and RobertaConfig spell and default
#: the activation and dropouts alike; the LM head is tied unless the config says otherwise)
ENCODER_FIELDS = dict(
    head_class="AutoModelForMaskedLM", linear_inputs=ENCODER_LINEAR_INPUTS,
    attention_inputs=ENCODER_ATTENTION_INPUTS, act_field=("hidden_act", "gelu"),
    dropout_fields=(("hidden_dropout_prob", 0.1), ("attention_probs_dropout_prob", 0.1)), tie_default=True)

FAMILY = Family(
    name="roberta", model_types=("roberta",),
    summary="RoBERTa masked LM: post-LN encoder, GELU MLP, learned positions",
    **ENCODER_FIELDS, shapes=_shapes, activation=ENCODER_ACTIVATION, lora_default_targets=("query", "value"),
    example=dict(model_type="roberta", hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, vocab_size=1000, max_position_embeddings=258,
                 tie_word_embeddings=False),
    source="transformers/models/roberta/modeling_roberta.py",
    # untied, the decoder adds its own bias and lm_head.bias is never read
    unused=lambda c: frozenset() if c["tie_word_embeddings"] else frozenset({"lm_head.bias"}))
