"""Qwen2 / Qwen2.5: transformers' `modeling_qwen2.py`, a Llama-style decoder whose q, k and v
projections carry a bias (o_proj and the MLP do not). The small models tie the LM head.
"""
from .decoder import LLAMA, decoder_fields, tiny_decoder
from .record import Family

__all__ = ["FAMILY"]


def _biases(c: dict) -> tuple[bool, bool, bool]:
    """Bias on q, k and v only (`Qwen2Attention`: o_proj and the MLP have none)."""
    return True, False, False


FAMILY = Family(
    name="qwen2", model_types=("qwen2",),
    summary="Qwen2 decoder: Llama-style with q/k/v biases",
    head_class="AutoModelForCausalLM", **decoder_fields(LLAMA, _biases),
    lora_default_targets=("q_proj", "v_proj"),
    example=tiny_decoder("qwen2"),
    config_defaults={"intermediate_size": 22016, "num_kv_heads": 32, "max_position": 32768},
    source="transformers/models/qwen2/modeling_qwen2.py")
