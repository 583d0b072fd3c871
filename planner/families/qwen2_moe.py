"""Qwen2-MoE (Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B): transformers' `modeling_qwen2_moe.py`. Qwen2's
attention (q/k/v biases, `qkv_bias`), then a MoE of `num_experts` fused SwiGLU experts, each
`moe_intermediate_size` wide, top-k routed (`num_experts_per_tok`; renormalised only with
`norm_topk_prob`, false in both releases; weights cast to the compute dtype), plus one shared
SwiGLU expert (`shared_expert_intermediate_size`) scaled by a sigmoid gate (`shared_expert_gate`,
an nn.Linear with one output: a router to memfit, never projected or adapted). Layers listed in
`mlp_only_layers`, or off the `decoder_sparse_step`, would be dense MLPs: their shapes are exact,
their activations not modelled (no released model has one).
"""
from .decoder import tiny_decoder
from .moe import moe_fields
from .moe_config import MoeSpec
from .record import Family

__all__ = ["FAMILY", "SPEC"]


def _biases(c: dict) -> tuple[bool, bool]:
    return bool(c.get("qkv_bias", True)), False


SPEC = MoeSpec(experts=("num_experts", 60), top_k=("num_experts_per_tok", 4),
               width=("moe_intermediate_size", 1408), biases=_biases,
               shared=("shared_expert_intermediate_size", 5632), renormalise="norm_topk_prob",
               sparse_step=("decoder_sparse_step", 1), dense_layers="mlp_only_layers",
               class_prefix="Qwen2Moe")

FAMILY = Family(
    name="qwen2_moe", model_types=("qwen2_moe",),
    summary="Qwen2-MoE decoder: Qwen2 attention, top-k routed fused experts plus a gated shared expert",
    head_class="AutoModelForCausalLM", **moe_fields(SPEC),
    lora_default_targets=None,
    example=tiny_decoder("qwen2_moe", intermediate_size=96, num_experts=4, num_experts_per_tok=2,
                         moe_intermediate_size=48, shared_expert_intermediate_size=80),
    config_defaults={"intermediate_size": 5632, "num_kv_heads": 16, "max_position": 32768},
    source="transformers/models/qwen2_moe/modeling_qwen2_moe.py")
