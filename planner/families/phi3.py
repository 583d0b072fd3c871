"""Phi-3 / Phi-3.5 / Phi-4 / Phi-4-mini (model_type phi3): transformers' `modeling_phi3.py`.

A Llama-style decoder whose q, k and v come from one fused `qkv_proj` ((a + 2k)·d rows) and
whose gate and up from one `gate_up_proj` (2i rows, chunked): the same saved bytes as the split
projections (SDPA saves v as its own contiguous tensor; SiLU and the product save the two
halves of one b·s·2i storage). `resid_pdrop` drops both branch outputs before the residual adds
(0 in the released configs). Phi-4-mini applies rotary to `partial_rotary_factor` (0.75) of
each head and ties its embeddings. `sliding_window` (2047 on Phi-3-mini-4k and -medium-4k)
makes every layer a sliding-window layer (`Phi3Model` then builds the sliding mask for all).

peft has no default LoRA targets for phi3 (absent from
`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`): memfit then adapts every block linear
(qkv_proj, o_proj, gate_up_proj, down_proj, as peft's "all-linear") and says so.
"""
from .decoder import decoder_fields, no_bias, tiny_decoder
from .decoder_blocks import FULL, SLIDING, DecoderTraits
from .record import Family

__all__ = ["FAMILY", "TRAITS"]

TRAITS = DecoderTraits(
    fused_qkv=True, fused_gate_up=True, residual_dropout=True, partial_rotary=True, rotary_cat=True,
    layer_types=lambda get, layers: [SLIDING if get("sliding_window") is not None else FULL] * layers,
    defaults={"sliding_window": None, "partial_rotary_factor": None})

FAMILY = Family(
    name="phi3", model_types=("phi3",),
    summary="Phi-3/Phi-4 decoder: Llama-style with fused qkv_proj and gate_up_proj",
    head_class="AutoModelForCausalLM", **decoder_fields(TRAITS, no_bias),
    lora_default_targets=None,
    dropout_fields=(("resid_pdrop", 0.0), ("attention_dropout", 0.0)),
    example=tiny_decoder("phi3", pad_token_id=0, bos_token_id=1, eos_token_id=2),
    config_defaults={"intermediate_size": 8192, "max_position": 4096},
    source="transformers/models/phi3/modeling_phi3.py")
