"""Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): transformers' `modeling_qwen3_moe.py`. Qwen3's
attention (no biases unless `attention_bias`, RMSNorm on every head's q and k before rotary),
then a MoE of `num_experts` fused SwiGLU experts, each `moe_intermediate_size` wide, top-k routed
(`num_experts_per_tok`; renormalised with `norm_topk_prob`, true in the releases; weights cast
to the compute dtype); no shared expert. `mlp_only_layers` / `decoder_sparse_step` as Qwen2-MoE.
"""
from .decoder import tiny_decoder
from .moe import moe_fields
from .moe_config import MoeSpec
from .record import Family

__all__ = ["FAMILY", "SPEC"]


def _biases(c: dict) -> tuple[bool, bool]:
    bias = bool(c.get("attention_bias", False))
    return bias, bias


SPEC = MoeSpec(experts=("num_experts", 128), top_k=("num_experts_per_tok", 8),
               width=("moe_intermediate_size", 768), biases=_biases,
               renormalise="norm_topk_prob", sparse_step=("decoder_sparse_step", 1),
               dense_layers="mlp_only_layers", qk_norm=True, class_prefix="Qwen3Moe")

FAMILY = Family(
    name="qwen3_moe", model_types=("qwen3_moe",),
    summary="Qwen3-MoE decoder: q/k-normed GQA attention, top-k routed fused SwiGLU experts",
    head_class="AutoModelForCausalLM", **moe_fields(SPEC),
    lora_default_targets=None,
    example=tiny_decoder("qwen3_moe", intermediate_size=96, head_dim=16, num_experts=4,
                         num_experts_per_tok=2, moe_intermediate_size=48, norm_topk_prob=True),
    config_defaults={"intermediate_size": 6144, "num_kv_heads": 4, "max_position": 32768},
    source="transformers/models/qwen3_moe/modeling_qwen3_moe.py")
