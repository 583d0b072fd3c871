"""Mixtral (8x7B, 8x22B): transformers' `modeling_mixtral.py`, Mistral's attention with a sparse
MoE of `num_local_experts` SwiGLU experts, each `intermediate_size` wide, top-k routed
(`num_experts_per_tok`, 2 in both releases) with the k weights renormalised and kept in fp32.
`router_jitter_noise` (0 in the releases) multiplies the MoE input by uniform noise in training.
"""
from .decoder import tiny_decoder
from .moe import moe_fields
from .moe_config import MoeSpec
from .record import Family

__all__ = ["FAMILY", "SPEC"]

SPEC = MoeSpec(experts=("num_local_experts", 8), top_k=("num_experts_per_tok", 2),
               width=("intermediate_size", 14336), biases=lambda c: (False, False),
               renormalise=True, fp32_scores=True, jitter="router_jitter_noise",
               class_prefix="Mixtral")

FAMILY = Family(
    name="mixtral", model_types=("mixtral",),
    summary="Mixtral sparse MoE decoder: Mistral attention, top-k routed fused SwiGLU experts",
    head_class="AutoModelForCausalLM", **moe_fields(SPEC),
    lora_default_targets=("q_proj", "v_proj"),
    example=tiny_decoder("mixtral", intermediate_size=96, num_local_experts=4, num_experts_per_tok=2),
    config_defaults={"intermediate_size": 14336, "num_kv_heads": 8, "max_position": 131072},
    source="transformers/models/mixtral/modeling_mixtral.py")
