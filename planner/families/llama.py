"""Llama (1, 2, 3.x; GaLore's pre-training configs): transformers' `modeling_llama.py`.

`attention_bias` puts a bias on q, k, v and o; `mlp_bias` on the MLP. Llama 3.2 1B/3B tie the
LM head to the embeddings (`tie_word_embeddings: true` in their configs).
"""
from .decoder import LLAMA, decoder_fields, tiny_decoder
from .record import Family

__all__ = ["FAMILY"]


def _biases(c: dict) -> tuple[bool, bool, bool]:
    bias = bool(c.get("attention_bias", False))
    return bias, bias, bool(c.get("mlp_bias", False))


FAMILY = Family(
    name="llama", model_types=("llama",),
    summary="Llama-style decoder: RMSNorm, rotary GQA attention, SwiGLU MLP",
    head_class="AutoModelForCausalLM", **decoder_fields(LLAMA, _biases),
    lora_default_targets=("q_proj", "v_proj"),
    example=tiny_decoder("llama"),
    config_defaults={"intermediate_size": 11008, "max_position": 2048},
    source="transformers/models/llama/modeling_llama.py")
