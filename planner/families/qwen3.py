"""Qwen3 (dense): transformers' `modeling_qwen3.py`, a Llama-style decoder with an RMSNorm over
head_dim on q and on k (`q_norm`, `k_norm`, LlamaRMSNorm-style `weight * x̂`) before rotary, no
q/k/v biases (`attention_bias` false), head_dim 128 whatever the width (Qwen3-4B: 32 heads of
128 on hidden 2560), and tied embeddings on the 0.6B, 1.7B and 4B models.

`use_sliding_window` (false in every released config) turns layers from `max_window_layers`
on into sliding-window layers (`Qwen3Config.__post_init__`).
"""
from .decoder import attention_bias, decoder_fields, tiny_decoder
from .decoder_blocks import FULL, SLIDING, DecoderTraits
from .record import Family

__all__ = ["FAMILY", "TRAITS"]


def _layer_types(get, layers: int) -> list[str]:
    """Qwen3Config: sliding from `max_window_layers` on, when a window is in effect."""
    window = _window(get)
    return [SLIDING if window is not None and i >= get("max_window_layers") else FULL
            for i in range(layers)]


def _window(get):
    """`sliding_window` counts only with `use_sliding_window` (the config sets it to None)."""
    return get("sliding_window") if get("use_sliding_window") else None


TRAITS = DecoderTraits(qk_norm=True, layer_types=_layer_types, window=_window,
                       defaults={"use_sliding_window": False, "sliding_window": 4096,
                                 "max_window_layers": 28})


FAMILY = Family(
    name="qwen3", model_types=("qwen3",),
    summary="Qwen3 decoder: Llama-style with RMSNorms on q and k, head_dim 128",
    head_class="AutoModelForCausalLM", **decoder_fields(TRAITS, attention_bias),
    lora_default_targets=("q_proj", "v_proj"),
    example=tiny_decoder("qwen3", head_dim=32),
    config_defaults={"intermediate_size": 22016, "num_kv_heads": 32, "head_dim": 128,
                     "max_position": 32768},
    source="transformers/models/qwen3/modeling_qwen3.py")
