"""Gemma 2: transformers' `modeling_gemma2.py`.

A Llama-style decoder with four RMSNorms per layer (before and after the attention and the
MLP), each computed as `x̂ · (1 + w)` in fp32 (`Gemma2RMSNorm`); a GeGLU MLP
(`hidden_activation` gelu_pytorch_tanh); embeddings multiplied by √h; alternating
sliding-window (even layers, window 4096) and global layers; attention scaled by
`query_pre_attn_scalar`^-½; head_dim 256 (128 on 27B); tied embeddings.

Soft-capping: `attn_logit_softcapping` (50) puts `tanh(scores / cap) · cap` on the attention
logits, which transformers' SDPA path cannot do: `Gemma2PreTrainedModel._supports_sdpa` is
False, so the model runs eager (transformers' default for it) or FlashAttention-2 (whose
kernel takes `softcap`); asking for SDPA raises. `final_logit_softcapping` (30) does the same
on the LM head's logits: tanh saves a vocabulary-sized D·bsV output for backward.
"""
from .decoder import attention_bias, decoder_fields, tiny_decoder
from .decoder_blocks import FULL, SLIDING, DecoderTraits
from .record import Family

__all__ = ["FAMILY", "TRAITS"]

TRAITS = DecoderTraits(
    norm="offset", sandwich_norms=True, attn_softcap="attn_logit_softcapping",
    final_softcap="final_logit_softcapping", embed_scale=True,
    # Gemma2Config: "sliding_attention" if (i + 1) % 2 else "full_attention"
    layer_types=lambda get, layers: [SLIDING if (i + 1) % 2 else FULL for i in range(layers)],
    defaults={"sliding_window": 4096, "attn_logit_softcapping": 50.0,
              "final_logit_softcapping": 30.0})


FAMILY = Family(
    name="gemma2", model_types=("gemma2",),
    summary="Gemma 2 decoder: four (1 + w) RMSNorms, GeGLU, soft-capped attention and logits, "
            "alternating sliding-window layers",
    head_class="AutoModelForCausalLM", **decoder_fields(TRAITS, attention_bias),
    lora_default_targets=("q_proj", "v_proj"),
    act_field=("hidden_activation", "gelu_pytorch_tanh"),
    attentions=("eager", "flash"), tie_default=True,
    example=tiny_decoder("gemma2", head_dim=16, query_pre_attn_scalar=16, sliding_window=64),
    config_defaults={"intermediate_size": 9216, "num_kv_heads": 4, "head_dim": 256,
                     "max_position": 8192},
    source="transformers/models/gemma2/modeling_gemma2.py")
