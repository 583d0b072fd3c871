"""The activation rule of sparse mixture-of-experts decoders (transformers 5.24's
`modeling_mixtral.py`, `modeling_qwen2_moe.py`, `modeling_qwen3_moe.py`): the Llama-style attention
block followed by a top-k routed MoE instead of the SwiGLU MLP (fields and shapes:
`planner.families.moe_config`).

Every term is what PyTorch 2.13's autograd saves for the forward transformers runs by default,
`grouped_mm_experts_forward` (`integrations/moe.py`; `experts_implementation` defaults to
"grouped_mm" for these classes, on CUDA from sm80 and on CPU from torch 2.10), checked tensor by
tensor with `saved_tensors_hooks` and end to end with MemTracker. With T = b·s tokens, k experts
per token and S = T·k routed rows:

* router: `F.linear(x, W_gate)` saves x (the MoE input, D·T·h, when W_gate trains);
  `softmax(logits, fp32)` its fp32 output 4·T·E; `topk` its int64 indices 8·T·k; a
  renormalisation `top /= top.sum(-1)` (Mixtral; Qwen's `norm_topk_prob`) the sum 4·T and the
  values it overwrites 4·T·k.
* dispatch: the tokens sorted by expert are gathered, `x[perm // k]`, saving the int64 index
  (8·S) and, when gate_up trains, the gathered copy D·S·h (grouped_mm's input); the routing
  weights gathered alike (8·S index) and saved by the final product, in fp32 for Mixtral
  (its scores stay fp32), in D for Qwen; the int32 group offsets 4·E; the inverse permutation
  that restores token order (8·S). Nothing is ever dropped or padded, so S = T·k rows however
  the router balances them.
* experts: gate_up's output (S, 2i), kept whole by SiLU's saved gate half and the product's up
  half, SiLU's output, and the product (down's input, when down trains): 4·D·S·i (3·D·S·i
  with a frozen down); down's output D·S·h, saved by the multiplication with the routing
  weights (which need its value for their gradient).
* the shared expert (Qwen2-MoE): a SwiGLU MLP on the MoE input, 4·D·T·i_s, its sigmoid gate's
  output D·T, and its output D·T·h, saved by the gating product.

Balanced routing (each expert gets b·s·k/E tokens, the stated default) and any imbalance (a
capacity factor c: the busiest expert gets c·b·s·k/E) give the same bytes: grouped_mm keeps
all S rows in one buffer and never sizes anything by an expert's load (the MemTracker tests
force round-robin and all-to-the-same-experts routing and measure the same bytes).
"""
from __future__ import annotations

from ..activation_blocks import Dims, FirstLayer, attention_bytes, attention_grad_bytes, rms_norm_bytes
from .decoder import LLAMA_ACTIVATION, LLAMA_ATTENTION_INPUTS
from .moe_config import (EXPERT_TARGETS, SHARED_LINEARS, MoeLayer, MoeSpec, moe_decoder_shapes, moe_linear_inputs,
                         moe_routing)
from .record import ActivationRule

__all__ = ["moe_activation", "moe_fields", "moe_layer_bytes", "moe_block_bytes", "moe_grad_bytes",
           "qk_norm_bytes"]


# ---- activations --------------------------------------------------------------------------

def _moe(x: Dims) -> MoeLayer:
    m = x.routing
    if not isinstance(m, MoeLayer):
        raise ValueError("a mixture-of-experts activation rule needs the record's routing")
    if not all(m.sparse):
        raise ValueError("memfit's MoE activation rule sizes layers that all route (Qwen's "
                         "decoder_sparse_step 1, mlp_only_layers empty, as every released model); "
                         "this config mixes dense and sparse layers")
    return m


def qk_norm_bytes(x: Dims, q: bool = True, k: bool = True) -> int:
    """Qwen3's per-head RMSNorm on q (a heads) and k (k heads), each of width d: the fp32 input
    (pow's), the rsqrt per head, and the normalised copy a trained weight saves."""
    heads = (x.a if q else 0) + (x.k if k else 0)
    return 4 * x.bs * heads * x.d + 4 * x.bs * heads + (0 if x.frozen else x.D * x.bs * heads * x.d)


def _router_bytes(x: Dims, m: MoeLayer) -> int:
    """fp32 softmax output 4TE, int64 top-k indices 8Tk, a renormalisation's sum and the
    values it divides in place (4T + 4Tk)."""
    t = x.bs
    return 4 * t * m.num_experts + 8 * t * m.top_k + (4 * t + 4 * t * m.top_k if m.renormalise else 0)


def _head(x: Dims) -> int:
    """Llama's head, and with `output_router_logits` the load-balancing loss, which runs after
    the stack on every layer's recorded router logits: its softmax of each saves D·T·E (the
    same with checkpointing, the logits being the original forward's)."""
    m = _moe(x)
    return LLAMA_ACTIVATION.head(x) + (x.L * x.D * x.bs * m.num_experts if m.aux_loss else 0)


def _dispatch_bytes(x: Dims, m: MoeLayer) -> int:
    """Three int64 permutations of the S rows (the gather's index, the routing weights' index,
    the inverse that restores token order), the int32 group offsets, the gathered routing
    weights (fp32 or D)."""
    rows = m.rows(x)
    return 3 * 8 * rows + 4 * m.num_experts + (4 if m.fp32_scores else x.D) * rows


def routed_experts_bytes(x: Dims, m: MoeLayer) -> int:
    """The routed experts (see the module docstring): gate_up's output, SiLU's output, down's
    output, and with trained experts the gathered input and the product down reads."""
    rows, e = m.rows(x), _expert_dtype(x)
    trained = 0 if x.frozen else e * rows * x.h + e * rows * m.width
    return 3 * e * rows * m.width + e * rows * x.h + trained


def _expert_dtype(x: Dims) -> int:
    """Bytes per element of the routed experts' tensors: the expert weights' dtype, which is the
    residual stream's (R). transformers' grouped_mm is not autocast-enabled, so it casts the
    gathered rows to the weights' dtype (`integrations.moe._grouped_mm`: `input.to(weight.dtype)`):
    under autocast over fp32 weights the experts run in fp32; otherwise R = D."""
    return x.R


def shared_expert_bytes(x: Dims, m: MoeLayer) -> int:
    """Qwen2-MoE's shared SwiGLU (its input counted as the MoE input), the sigmoid gate's
    output D·T and the shared output D·T·h saved by the gating product."""
    if not m.shared:
        return 0
    return 4 * x.D * x.bs * m.shared + x.D * x.bs + x.D * x.bsh


def moe_block_bytes(x: Dims) -> int:
    """The whole MoE block: its input (saved by the router when the router trains, by a shared
    expert's linears otherwise, which the adapter rule releases when frozen), the router noise
    (Mixtral's jitter), router, dispatch, experts, shared expert."""
    m = _moe(x)
    # under autocast over a trained fp32 stream each linear reading the input saves its own
    # D cast of it: the router, and Qwen2-MoE's shared gate_proj, up_proj and shared_expert_gate
    readers = 1 + (3 if m.shared else 0) if (x.R != x.D and not x.frozen) else 1
    moe_input = readers * x.D * x.bsh if (not x.frozen or m.shared) else 0
    noise = x.D * x.bsh if m.jitter > 0 else 0
    return (moe_input + noise + _router_bytes(x, m) + _dispatch_bytes(x, m)
            + routed_experts_bytes(x, m) + shared_expert_bytes(x, m))


def _attention_block(x: Dims) -> int:
    m = _moe(x)
    return attention_bytes(x, softmax_fp32=True) + (qk_norm_bytes(x) if m.qk_norm else 0)


def moe_layer_bytes(x: Dims) -> int:
    """A decoder layer: 2 RMSNorms, the attention (fp32 softmax; Qwen3's q/k norms), the MoE."""
    return 2 * rms_norm_bytes(x) + _attention_block(x) + moe_block_bytes(x)


def moe_grad_bytes(x: Dims) -> int:
    """Gradients alive at the worst point of the MoE's backward, net of what it releases (it
    starts with every routed tensor saved).

    Restoring token order and the routing-weight product run first: the output gradient
    reshaped to the S rows, `index_backward`'s zeros and its accumulated result, all in the
    routing product's dtype (fp32 for Mixtral's fp32 weights): 3·S·h of them; then the
    product's two gradients while the first is alive (the same count). Later, the experts'
    SwiGLU, 2·D·S·i net of what it releases, as a Llama MLP's (`mlp_grad_bytes`), down's
    output D·S·h released by then. A shared expert's backward runs before the routed one and
    leaves its share of the MoE input's gradient, D·T·h, accumulated meanwhile.
    """
    m = _moe(x)
    e = _expert_dtype(x)
    rows, product = m.rows(x), 4 if m.fp32_scores else e
    shared_input_grad = x.D * x.bsh if m.shared else 0
    swiglu = 2 * e * rows * m.width - e * rows * x.h
    return max(3 * product * rows * x.h, swiglu) + shared_input_grad


def _backward_phases(x: Dims, lora_saved: int, lora_grads: int) -> list[int]:
    """The MoE's backward runs first, with everything saved; then the post-attention norm's
    (five fp32 b·s·h temporaries) and the attention's, as in a Llama layer."""
    per_layer = moe_layer_bytes(x)
    pre_attention = _attention_block(x) + rms_norm_bytes(x)
    return [per_layer + lora_saved + max(moe_grad_bytes(x), lora_grads),
            pre_attention + attention_grad_bytes(x, softmax_fp32=True),
            per_layer - moe_block_bytes(x) + 5 * 4 * x.bsh]


def _frozen_first_layer(x: Dims, g: FirstLayer) -> int:
    """Layer 0 with a frozen input: Llama's rule; without an attention adapter the MoE's input
    needs no gradient either: the router and dispatch save nothing, and the routed experts
    only what their own adapters make need a gradient (`_first_layer_experts`). (A shared
    expert's adapters, Qwen2-MoE with MLP-only targets, keep the shared expert as saved.)"""
    m = _moe(x)
    # q/k norms save only behind an adapted q or k projection (the input needs no gradient)
    spared = LLAMA_ACTIVATION.frozen_first_layer(x, g) + (
        qk_norm_bytes(x, not g.q, not g.k) if m.qk_norm else 0)
    if g.attention:
        return spared
    routed = (_router_bytes(x, m) + _dispatch_bytes(x, m) + routed_experts_bytes(x, m)
              + (x.D * x.bsh if m.jitter > 0 else 0))
    shared_adapted = g.targets is None or any(t in SHARED_LINEARS for t in g.targets)
    # a shared expert without adapters saves nothing here either; its product (down's input)
    # is already released by the adapter rule, as in every frozen layer
    shared = 0 if (not m.shared or shared_adapted) else (shared_expert_bytes(x, m)
                                                         - x.D * x.bs * m.shared)
    adapters, _ = _expert_adapters(x, g.targets, 0, x.D)
    return spared + routed + shared + adapters - _first_layer_experts(x, m, g.targets)


def _first_layer_experts(x: Dims, m: MoeLayer, targets) -> int:
    """What layer 0's routed experts save when only their adapters need gradients: an adapted
    gate_up saves its (gathered) input, then its output and SiLU's; the product and down's W'
    follow as down is adapted or its input needs a gradient; the routing weights (their
    product's other factor) and the inverse permutation once down's output needs one."""
    gate_up = targets is not None and EXPERT_TARGETS[0] in targets
    down = targets is not None and EXPERT_TARGETS[1] in targets
    if not (gate_up or down):
        return 0
    rows, e, h, i = m.rows(x), m.num_experts, x.h, m.width
    saved = 4 * e + (4 if m.fp32_scores else x.D) * rows + 8 * rows
    if gate_up:
        saved += x.D * rows * h + 3 * x.D * rows * i
    if down:
        saved += x.D * rows * i + (x.D * e * h * i if gate_up else 0)
    return saved


def _expert_adapters(x: Dims, targets, rank: int, lora_d: int) -> tuple[int, int]:
    """peft's `ParamWrapper` (target_parameters) on a fused expert tensor W (E, out, in): each
    forward folds the adapters in, W' = baddbmm(W, B, A, alpha=scaling), a full (E, out, in)
    copy in D that grouped_mm saves for its input gradient, and trains W', so grouped_mm also
    saves its input (gate_up: the gathered D·S·h; down: the product D·S·i). A and B are cast
    to D for the fold (saved copies D·E·r·(in + out) when the adapters are in another dtype).
    In backward W''s gradient, D·E·out·in, is the largest temporary."""
    if targets is None:
        return 0, 0
    m = _moe(x)
    rows, e, h, i = m.rows(x), m.num_experts, x.h, m.width
    tensors = {"experts.gate_up_proj": (2 * i, h, x.D * rows * h),
               "experts.down_proj": (h, i, x.D * rows * i)}
    saved, grads = 0, 0
    for name, (out_f, in_f, read) in tensors.items():
        if name not in targets:
            continue
        casts = x.D * e * rank * (in_f + out_f) if lora_d != x.D else 0
        saved += x.D * e * out_f * in_f + read + casts
        grads = max(grads, x.D * e * out_f * in_f)
    return saved, grads


def moe_activation() -> ActivationRule:
    """The MoE decoder's rule: Llama's embeddings and checkpoints, the MoE layer above, the head
    with the load-balancing loss when the config computes it."""
    return ActivationRule(
        layer=moe_layer_bytes, embeddings=LLAMA_ACTIVATION.embeddings, head=_head,
        backward_phases=_backward_phases, checkpoint_held=LLAMA_ACTIVATION.checkpoint_held,
        input_saved_by_layer=LLAMA_ACTIVATION.input_saved_by_layer,
        frozen_first_layer=_frozen_first_layer, parameter_adapters=_expert_adapters)


def moe_fields(spec: MoeSpec) -> dict:
    """The `Family` fields a MoE decoder derives from its `MoeSpec`: shapes, the rule above,
    `linear_inputs`, Llama's `attention_inputs` and the routing. A record spreads them:
    `Family(name=..., **moe_fields(SPEC), ...)`."""
    return dict(shapes=lambda c: moe_decoder_shapes(c, spec), activation=moe_activation(),
                linear_inputs=moe_linear_inputs(spec), attention_inputs=LLAMA_ATTENTION_INPUTS,
                routing=moe_routing(spec))
