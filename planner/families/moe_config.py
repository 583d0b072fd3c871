"""A sparse MoE decoder's config fields and parameter shapes (transformers 5.24's
`modeling_mixtral.py`, `modeling_qwen2_moe.py`, `modeling_qwen3_moe.py`); the activation rule is
`planner.families.moe`.

transformers 5 stores a layer's experts fused: `mlp.experts.gate_up_proj` (E, 2i, h) and
`mlp.experts.down_proj` (E, h, i) (`*Experts`, i the expert width), routed by `mlp.gate.weight`
(E, h) (`*TopKRouter`, not an `nn.Linear`). Qwen2-MoE adds a shared SwiGLU expert
(`mlp.shared_expert.{gate,up,down}_proj`) with a 1-output sigmoid gate (`mlp.shared_expert_gate`).
Roles (`planner.models.classify_param`): the fused tensors are "expert" (E matrices each), the
router weights "router".
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..activation_blocks import Dims
from .decoder import LLAMA_LINEAR_INPUTS
from .record import Routing, ShapeRow
from .shapes import linear, norm

__all__ = ["MoeSpec", "MoeLayer", "moe_routing", "moe_decoder_shapes", "moe_linear_inputs",
           "EXPERT_TARGETS", "SHARED_LINEARS", "MAX_EXPERTS"]

#: the fused expert tensors as adapter targets (peft `target_parameters` spelling)
EXPERT_TARGETS = ("experts.gate_up_proj", "experts.down_proj")
#: a shared expert's linears, as adapter targets
SHARED_LINEARS = ("gate_proj", "up_proj", "down_proj")
#: beyond this many experts a config is a mistake (the largest public MoEs route among 384)
MAX_EXPERTS = 1 << 14


@dataclass(frozen=True)
class MoeSpec:
    """How one family spells and implements its MoE layer.

    experts / top_k / width: (config key, transformers' default) of E, k and the expert width i
    (Mixtral's experts are `intermediate_size` wide). shared: the shared expert's width key (None:
    no shared expert). renormalise: the config key of `norm_topk_prob`, or True/False when the
    model always / never renormalises. fp32_scores: the routing weights stay fp32 (Mixtral) or
    are cast to the compute dtype (Qwen). jitter: the router-noise key (Mixtral). sparse_step /
    dense_layers: Qwen's `decoder_sparse_step` and `mlp_only_layers` (None: every layer routes).
    qk_norm: RMSNorm on each head's q and k (Qwen3). biases(c): (q/k/v bias, o bias).
    """
    experts: tuple[str, int]
    top_k: tuple[str, int]
    width: tuple[str, int]
    biases: Callable[[dict], tuple[bool, bool]]
    shared: tuple[str, int] | None = None
    renormalise: str | bool = True
    fp32_scores: bool = False
    jitter: str | None = None
    sparse_step: tuple[str, int] | None = None
    dense_layers: str | None = None
    qk_norm: bool = False
    class_prefix: str = ""


@dataclass(frozen=True)
class MoeLayer(Routing):
    """One config's routing, as the activation rule reads it from `Dims.routing`."""
    width: int = 0                  # i: each routed expert's intermediate size
    shared: int = 0                 # the shared expert's intermediate size (0: none)
    renormalise: bool = True        # top-k weights divided by their sum (saves 4T + 4Tk)
    fp32_scores: bool = False
    jitter: float = 0.0
    qk_norm: bool = False
    aux_loss: bool = False          # output_router_logits: the load-balancing loss is computed
    sparse: tuple[bool, ...] = ()   # per layer: routed (True) or a dense MLP

    def rows(self, x: Dims) -> int:
        """S: the (token, expert) rows every routed tensor has."""
        return x.bs * self.top_k


def _int(c: Mapping, key: str, default: int, low: int, high: int) -> int:
    value = c.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"field {key!r} must be a whole number from {low:,} to {high:,} "
                         f"for a mixture-of-experts model, got {value!r:.60}")
    return value


def _flag(c: Mapping, key: str, default: bool) -> bool:
    value = c.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"field {key!r} must be true or false, got {value!r:.60}")
    return value


def _sparse_layers(c: Mapping, spec: MoeSpec, layers: int) -> tuple[bool, ...]:
    """Which decoder layers route (Qwen's rule: not in mlp_only_layers and (l+1) % step == 0)."""
    step = _int(c, spec.sparse_step[0], spec.sparse_step[1], 1, 1 << 20) if spec.sparse_step else 1
    dense = c.get(spec.dense_layers) if spec.dense_layers else None
    dense = [] if dense is None else dense
    if not isinstance(dense, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in dense):
        raise ValueError(f"field {spec.dense_layers!r} must be a list of layer indices, got {dense!r:.60}")
    return tuple(layer not in dense and (layer + 1) % step == 0 for layer in range(layers))


def moe_routing(spec: MoeSpec) -> Callable[[Mapping], MoeLayer]:
    """The record's `routing(c)`: E, k and the rest from a config (transformers' defaults for a
    field it leaves out), with a ValueError naming the field for one a model cannot have."""
    def routing(c: Mapping) -> MoeLayer:
        experts = _int(c, spec.experts[0], spec.experts[1], 1, MAX_EXPERTS)
        top_k = _int(c, spec.top_k[0], spec.top_k[1], 1, MAX_EXPERTS)
        if top_k > experts:
            raise ValueError(f"field {spec.top_k[0]!r} = {top_k} routes each token to more experts "
                             f"than the {experts} of {spec.experts[0]!r}: use at most {experts}")
        width = _int(c, spec.width[0], spec.width[1], 1, 1 << 20)
        shared = _int(c, spec.shared[0], spec.shared[1], 1, 1 << 20) if spec.shared else 0
        renorm = (_flag(c, spec.renormalise, False) if isinstance(spec.renormalise, str)
                  else spec.renormalise)
        jitter = c.get(spec.jitter, 0.0) if spec.jitter else 0.0
        jitter = 0.0 if jitter is None else jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise ValueError(f"field {spec.jitter!r} must be a number in [0, 1), got {jitter!r:.60}")
        layers = c.get("num_hidden_layers")
        layers = layers if isinstance(layers, int) and not isinstance(layers, bool) and layers > 0 else 1
        return MoeLayer(experts, top_k, width, shared, renorm, spec.fp32_scores, float(jitter),
                        spec.qk_norm, _flag(c, "output_router_logits", False),
                        _sparse_layers(c, spec, min(layers, 1024)))
    return routing


# ---- shapes -------------------------------------------------------------------------------

def _swiglu(prefix: str, h: int, i: int) -> list[ShapeRow]:
    return (linear(f"{prefix}.gate_proj", i, h, False) + linear(f"{prefix}.up_proj", i, h, False)
            + linear(f"{prefix}.down_proj", h, i, False))


def _moe_block(p: str, h: int, m: MoeLayer, prefix: str) -> list[ShapeRow]:
    """Router, fused experts (E, 2i, h) and (E, h, i), and a gated shared expert."""
    e, i = m.num_experts, m.width
    rows = [(f"{p}.gate.weight", (e, h), f"{prefix}TopKRouter"),
            (f"{p}.experts.gate_up_proj", (e, 2 * i, h), f"{prefix}Experts"),
            (f"{p}.experts.down_proj", (e, h, i), f"{prefix}Experts")]
    if m.shared:
        rows += _swiglu(f"{p}.shared_expert", h, m.shared) + linear(f"{p}.shared_expert_gate", 1, h, False)
    return rows


def moe_decoder_shapes(c: dict, spec: MoeSpec) -> list[ShapeRow]:
    """embed_tokens, L x (q, k, v, o [+ q/k norms], the MoE block or a dense MLP, 2 RMSNorms),
    the final norm, lm_head unless tied."""
    h, hd, v = c["hidden_size"], c["head_dim"], c["vocab_size"]
    m = moe_routing(spec)(c)
    qkv_bias, o_bias = spec.biases(c)
    norm_class = f"{spec.class_prefix}RMSNorm"
    rows = [("model.embed_tokens.weight", (v, h), "Embedding")]
    for layer in range(c["num_layers"]):
        p = f"model.layers.{layer}"
        rows += (linear(f"{p}.self_attn.q_proj", c["num_heads"] * hd, h, qkv_bias)
                 + linear(f"{p}.self_attn.k_proj", c["num_kv_heads"] * hd, h, qkv_bias)
                 + linear(f"{p}.self_attn.v_proj", c["num_kv_heads"] * hd, h, qkv_bias)
                 + linear(f"{p}.self_attn.o_proj", h, c["num_heads"] * hd, o_bias))
        if spec.qk_norm:
            rows += norm(f"{p}.self_attn.q_norm", hd, False, norm_class) + norm(
                f"{p}.self_attn.k_norm", hd, False, norm_class)
        rows += (_moe_block(f"{p}.mlp", h, m, spec.class_prefix) if m.sparse[layer]
                 else _swiglu(f"{p}.mlp", h, c["intermediate_size"]))
        rows += (norm(f"{p}.input_layernorm", h, False, norm_class)
                 + norm(f"{p}.post_attention_layernorm", h, False, norm_class))
    rows += norm("model.norm", h, False, norm_class)
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.weight", (v, h), "Linear")])


def moe_linear_inputs(spec: MoeSpec) -> dict[str, str]:
    """What each block linear reads: the attention's, and a shared expert's SwiGLU linears."""
    out = {k: v for k, v in LLAMA_LINEAR_INPUTS.items() if k.startswith("self_attn.")}
    if spec.shared:
        out.update({"mlp.shared_expert.gate_proj": "mlp_in", "mlp.shared_expert.up_proj": "mlp_in",
                    "mlp.shared_expert.down_proj": "mlp_act"})
    return out
