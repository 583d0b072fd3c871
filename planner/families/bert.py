"""BERT (masked LM): transformers' `modeling_bert.py`, `BertForMaskedLM`.

The encoder layer is RoBERTa's module tree (post-LN attention and GELU MLP blocks; the shapes,
linear inputs and activation rule are `roberta.py`'s). What differs: the embeddings take their
position ids from a buffer slice and their token-type ids from one `gather` of a buffer
((1, s), broadcast over the batch), and the head is `cls.predictions`: a transform (dense, the
config's activation, LayerNorm), then the decoder tied to the word embeddings, with the
prediction bias `cls.predictions.bias` (the decoder's bias, tied to it).
"""
from __future__ import annotations

from dataclasses import replace

from ..activation_blocks import Dims, layer_norm_bytes
from .record import Family
from .roberta import ENCODER_ACTIVATION, ENCODER_FIELDS, encoder_embeddings_bytes, encoder_layer_shapes
from .shapes import linear, norm

__all__ = ["FAMILY"]


def _shapes(c: dict) -> list:
    h, v = c["hidden_size"], c["vocab_size"]
    e = "bert.embeddings"
    rows = [(f"{e}.word_embeddings.weight", (v, h), "Embedding"),
            (f"{e}.position_embeddings.weight", (c["max_position"], h), "Embedding"),
            (f"{e}.token_type_embeddings.weight", (c.get("type_vocab_size", 2), h), "Embedding"),
            *norm(f"{e}.LayerNorm", h, True, "LayerNorm")]
    for i in range(c["num_layers"]):
        rows += encoder_layer_shapes(f"bert.encoder.layer.{i}", h, c["intermediate_size"])
    p = "cls.predictions"
    rows += ([(f"{p}.bias", (v,), "BertLMPredictionHead")]
             + linear(f"{p}.transform.dense", h, h, True)
             + norm(f"{p}.transform.LayerNorm", h, True, "LayerNorm"))
    # untied, the decoder keeps its own weight and bias (tied, both are the embedding's and
    # cls.predictions.bias)
    return rows + ([] if c["tie_word_embeddings"] else [(f"{p}.decoder.weight", (v, h), "Linear"),
                                                        (f"{p}.decoder.bias", (v,), "Linear")])


def _embeddings(x: Dims, checkpointing: bool) -> int:
    """The token-type ids `gather` makes, int64 (1, s): 8s (the position ids are a view of the
    `position_ids` buffer); the rest as RoBERTa's."""
    return encoder_embeddings_bytes(x, checkpointing, ids=8 * x.s)


def _head(x: Dims) -> int:
    """cls.predictions: transform.dense's input, the activation's saves (exact GELU: its input),
    transform.LayerNorm's input (the activation's output) and stats, the decoder's input (the
    linears' inputs only when they train)."""
    trained = 0 if x.frozen else x.D * x.bsh
    # the LayerNorm reads the activation's output, a matmul's (D), not the residual stream
    return 2 * trained + x.act_saves * x.D * x.bsh + layer_norm_bytes(x, stream=False)


FAMILY = Family(
    name="bert", model_types=("bert",),
    summary="BERT masked LM: post-LN encoder, GELU MLP, learned positions and token types",
    **ENCODER_FIELDS, shapes=_shapes,
    activation=replace(ENCODER_ACTIVATION, embeddings=_embeddings, head=_head),
    lora_default_targets=("query", "value"),
    example=dict(model_type="bert", hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, vocab_size=1000, max_position_embeddings=256,
                 tie_word_embeddings=False),
    config_defaults={"intermediate_size": 3072, "max_position": 512},
    source="transformers/models/bert/modeling_bert.py",
    # untied, the decoder adds its own bias and cls.predictions.bias is never read
    unused=lambda c: frozenset() if c["tie_word_embeddings"] else frozenset({"cls.predictions.bias"}))
