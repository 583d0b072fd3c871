"""Gemma 3 text: transformers' `modeling_gemma3.py` (`Gemma3ForCausalLM`, model_type
`gemma3_text`).

Gemma 2's block (four `x̂ · (1 + w)` RMSNorms in fp32, GeGLU, √h-scaled embeddings, head_dim
256, 128 on 27B) with q/k RMSNorms over head_dim (Gemma-style) before rotary, five local
sliding-window layers (window 512 on 1B, 1024 from 4B) to one global layer
(`sliding_window_pattern` 6), and a rotary table per layer type (local base 10⁴, global 10⁶,
linear scaling 8 on 4B and up): two (cos, sin) pairs. Gemma 3 drops attention soft-capping
(the modeling file never passes `attn_logit_softcapping` to the attention), so SDPA is allowed
and is transformers' default; `final_logit_softcapping` is null in the released configs.

Under SDPA a sliding layer gets a materialised mask once the sequence reaches the window:
the kernel saves it, converted to D, and transformers repeats k and v to all heads for it
(`decoder_blocks.attention_layer_bytes`), so local and global layers differ (`stack`).

A `gemma3` config (`Gemma3ForConditionalGeneration`: a SigLIP vision tower and projector
around this text model, which `AutoModelForCausalLM` builds from the 4B/12B/27B checkpoints)
is not this record. Its fields sit in `text_config`, and `planner.models` says so: pass the
`text_config` (model_type gemma3_text) as the config, or a catalog name. The catalog's gemma-3
4B/12B/27B entries are the checkpoints' `text_config`, the language model a text-only
fine-tune trains with `Gemma3ForCausalLM` (without the ~0.4 B-parameter vision tower that the
multimodal class also holds).
"""
from .decoder import attention_bias, decoder_fields, tiny_decoder
from .decoder_blocks import FULL, SLIDING, DecoderTraits
from .record import Family

__all__ = ["FAMILY", "TRAITS"]


def _layer_types(get, layers: int) -> list[str]:
    """Gemma3TextConfig: "sliding_attention" if (i + 1) % sliding_window_pattern else global."""
    pattern = get("sliding_window_pattern")
    return [SLIDING if (i + 1) % pattern else FULL for i in range(layers)]


TRAITS = DecoderTraits(
    norm="offset", sandwich_norms=True, qk_norm=True, final_softcap="final_logit_softcapping",
    embed_scale=True, layer_types=_layer_types, rotary_per_layer_type=True,
    defaults={"sliding_window": 4096, "sliding_window_pattern": 6,
              "final_logit_softcapping": None})


FAMILY = Family(
    name="gemma3", model_types=("gemma3_text",),
    summary="Gemma 3 text decoder: Gemma 2's block with q/k norms, 5 local : 1 global layers, "
            "a rotary table per layer type",
    head_class="AutoModelForCausalLM", **decoder_fields(TRAITS, attention_bias),
    lora_default_targets=("q_proj", "v_proj"),
    act_field=("hidden_activation", "gelu_pytorch_tanh"), tie_default=True,
    example=tiny_decoder("gemma3_text", head_dim=16, query_pre_attn_scalar=16, sliding_window=64,
                         sliding_window_pattern=2),
    config_defaults={"intermediate_size": 9216, "num_kv_heads": 4, "head_dim": 256,
                     "max_position": 131072},
    source="transformers/models/gemma3/modeling_gemma3.py")
