"""Mistral: transformers' `modeling_mistral.py`, a Llama-style decoder without biases.

`sliding_window` (4096 in Mistral 7B v0.1, null from v0.2) restricts attention to the last
`sliding_window` positions; with a sequence no longer than the window it attends exactly as
causal attention does.
"""
from .decoder import LLAMA_ACTIVATION, LLAMA_ATTENTION_INPUTS, LLAMA_LINEAR_INPUTS, decoder_shapes
from .record import Family

__all__ = ["FAMILY"]

FAMILY = Family(
    name="mistral", model_types=("mistral",),
    summary="Mistral decoder: Llama-style, no biases, optional sliding-window attention",
    head_class="AutoModelForCausalLM",
    shapes=lambda c: decoder_shapes(c, lambda c: (False, False, False)),
    activation=LLAMA_ACTIVATION, linear_inputs=LLAMA_LINEAR_INPUTS,
    lora_default_targets=("q_proj", "v_proj"), attention_inputs=LLAMA_ATTENTION_INPUTS,
    example=dict(model_type="mistral", hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                 max_position_embeddings=256, tie_word_embeddings=False, sliding_window=None),
    config_defaults={"intermediate_size": 14336, "num_kv_heads": 8, "max_position": 131072},
    source="transformers/models/mistral/modeling_mistral.py")
