"""What one parameter costs under a method: the storage layouts a method record is built from.

A method record (`planner.methods`) names one storage object: `FullRank` (every parameter
trained, one optimizer-state rule), `Projected` (block linears get low-rank states and a
projection, the rest plain AdamW states) or `Adapter` (a frozen, possibly quantised base with
trainable adapters on the target linears, and optionally fully trained `modules_to_save`). The
state rules are the small named functions below; `docs/storage-contract.md` lists the tensors
memfit's own `lowrank` optimizers hold, and the tests check the planner against the bytes those
optimizers really hold.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .breakdown import Row
from .dtypes import tensor_bytes
from .models import PROJECTED_ROLES, Param
from .storage import (BNB_QMAP_BYTES, MIN_8BIT_NUMEL, STEP_BYTES, ParamMemory, adam_moments,
                      int4_packed, int8_weight, lowrank_shapes, moments_8bit, projection_side)

if TYPE_CHECKING:
    from .resolve import Resolved

__all__ = ["FullRank", "Projected", "Adapter", "param_memory", "basis_dim", "projects",
           "adam_states", "adam8_states", "adafactor_states", "sgd_states", "step_bytes",
           "fira_extra", "apollo_extra", "qgalore_extra", "gradnorm_extra", "gradnorm_reference_extra",
           "float_projection", "int4_projection", "dct_indices", "seeded_projection",
           "dense_weight", "int8_trained_weight", "lora_pairs", "lora_pro_states", "lora_adam_states",
           "lora_tensors", "dora_tensors", "svfit_tensors", "welore_tensors", "spec_rank",
           "reduced_rank", "base_weight", "svfit_frozen", "replaced_weight", "adapter_adam_states",
           "ggpo_states", "fully_trained", "no_shared", "dct_bases", "bnb_qmaps"]

StateRule = Callable[[Param, "Resolved"], int]


# ---- optimizer states of a fully trained parameter ----------------------------------------

def step_bytes(r: Resolved) -> int:
    """torch.optim and memfit keep `step` as a 0-d float32 tensor; bitsandbytes' optimizers (a
    paged one too) and the authors' reference code (except torch's AdamW) count steps in a
    Python int."""
    return 0 if r.bnb_state or (r.reference and r.method.reference_int_step) else STEP_BYTES


def _master(numel: int, r: Resolved) -> int:
    """The fp32 master copy mixed precision keeps of a trained parameter."""
    return 4 * numel if r.master else 0


def adam_states(p: Param, r: Resolved) -> int:
    """`exp_avg`, `exp_avg_sq` like `p` in the state format, plus `step`."""
    return adam_moments(p.numel, r.states) + step_bytes(r)


def adam8_states(p: Param, r: Resolved) -> int:
    """Block-wise 8-bit moments (bitsandbytes layout; fp32 under 4096 elements) plus `step`."""
    return moments_8bit(p.numel) + step_bytes(r)


def adafactor_states(p: Param, r: Resolved) -> int:
    """transformers' Adafactor (beta1=None): fp32 row and column second moments of a matrix (a
    full fp32 one for a vector) plus the 0-d fp32 `RMS`; the step is a Python int. A 3-D tensor
    (fused experts, (E, m, n)) factors each matrix: rows (E, m), columns (E, n)."""
    if len(p.shape) >= 2:
        return 4 * (math.prod(p.shape[:-1]) + math.prod(p.shape[:-2]) * p.shape[-1] + 1)
    return 4 * (p.numel + 1)


def sgd_states(p: Param, r: Resolved) -> int:
    """torch SGD with momentum: `momentum_buffer` only."""
    return tensor_bytes(p.numel, r.states)


def gradnorm_reference_extra(p: Param, r: Resolved) -> int:
    """The reference GradNormLoRP weight-normalises every parameter: a full copy v, the magnitude
    g (one per row; one for a vector) and g's two moments, all in the parameter dtype."""
    if not r.reference:
        return 0
    g = math.prod(p.shape[:-1]) if len(p.shape) >= 2 else 1
    return tensor_bytes(p.numel, r.weights) + 3 * tensor_bytes(g, r.weights)


def _with_gradnorm_reference(rule: StateRule) -> StateRule:
    return lambda p, r: rule(p, r) + gradnorm_reference_extra(p, r)


# ---- low-rank extras of a projected matrix ------------------------------------------------

def fira_extra(p: Param, r: Resolved) -> int:
    """The norm-growth limiter's previous residual norm: 0-d fp32 (reference: gradient dtype);
    one per expert matrix of a fused expert tensor."""
    return tensor_bytes(1, r.grads) if r.reference else 4 * p.batch


def apollo_extra(p: Param, r: Resolved) -> int:
    """The projection's seed (int64; one draws every expert's matrix of a fused tensor) and the
    limiter norm (fp32, one per expert matrix); the reference keeps the limiter scalar in the
    gradient dtype (and the projection itself, see `seeded_projection`)."""
    return tensor_bytes(1, r.grads) if r.reference else 8 + 4 * p.batch


def qgalore_extra(p: Param, r: Resolved) -> int:
    """The last five projections' cosine similarities (fp32) and the current gap (int64); a
    fused expert tensor keeps one history and gap (the cosine is the experts' mean)."""
    return 0 if r.reference else 5 * 4 + 8


def gradnorm_extra(p: Param, r: Resolved) -> int:
    """The magnitude's moments (m,) in the moment format and `row_scale` ‖v‖/g (m,) fp32, which
    replaces the reference's full copy of v (`gradnorm_reference_extra`)."""
    if r.reference:
        return gradnorm_reference_extra(p, r)
    rows = p.batch * p.matrix[0]                      # every expert matrix's rows
    moments = moments_8bit(rows) if r.method.eight_bit else adam_moments(rows, r.states)
    return moments + 4 * rows


# ---- projections ------------------------------------------------------------------------------

def _projections(p: Param, r: Resolved, side: str) -> tuple[int, ...]:
    """Elements of each projection tensor: one matrix's, times the experts of a fused tensor
    (stacked (E, r, n) / (E, m, r): one basis per expert)."""
    return tuple(p.batch * k for k in lowrank_shapes(p.matrix, r.rank, side)[1])


def float_projection(p: Param, r: Resolved, side: str) -> int:
    """GaLore's projection matrices in the projection format (the gradient's by default)."""
    return sum(tensor_bytes(k, r.projection) for k in _projections(p, r, side))


def int4_projection(p: Param, r: Resolved, side: str) -> int:
    """Q-GaLore's INT4 projection: two codes a byte (memfit) or one (reference), bf16 scale/zero
    per 256 of the (stacked) projection's elements."""
    return sum(int4_packed(k, packed=not r.reference) for k in _projections(p, r, side))


def dct_indices(p: Param, r: Resolved, side: str) -> int:
    """SVD-free DCT: r int32 column indices per matrix; the bases are shared (`dct_bases`)."""
    return 4 * r.rank * p.batch


def seeded_projection(p: Param, r: Resolved, side: str) -> int:
    """APOLLO regenerates its random projection from the seed; the reference stores it."""
    if not r.reference:
        return 0
    return sum(tensor_bytes(k, r.grads) for k in _projections(p, r, side))


def dense_weight(p: Param, r: Resolved) -> int:
    return tensor_bytes(p.numel, r.weights)


def int8_trained_weight(p: Param, r: Resolved) -> int:
    """Q-GaLore's INT8 block linears: uint8 codes and bf16 scale/zero per 256. Its INT8 layers
    replace `nn.Linear` modules, so fused expert tensors keep their dense weights."""
    return int8_weight(p.numel) if p.role == "block_linear" else dense_weight(p, r)


# ---- the three layouts ------------------------------------------------------------------------

@dataclass(frozen=True)
class FullRank:
    """Every parameter trained: weights, gradient, `states` (+ fp32 master in mixed precision)."""
    states: StateRule = adam_states

    def param(self, p: Param, r: Resolved) -> ParamMemory:
        return ParamMemory(weights=tensor_bytes(p.numel, r.weights),
                           gradients=tensor_bytes(p.numel, r.grads),
                           optimizer_states=self.states(p, r) + _master(p.numel, r))


def projects(p: Param, r: Resolved) -> bool:
    """Whether a projected method projects `p`: block linears, and memfit's optimizers also each
    expert matrix of a fused expert tensor. The authors' code selects `nn.Linear` modules, so
    with transformers 5's fused experts it leaves them to plain AdamW."""
    return p.role in PROJECTED_ROLES and not (r.reference and p.role != "block_linear")


@dataclass(frozen=True)
class Projected:
    """Projected matrices (`projects`): full weights and gradients, `lowrank` moments of the
    projected gradient (E of them for a fused expert tensor), the method's `extra` state and
    `projection`; everything else: plain states (`plain`)."""
    extra: StateRule = lambda p, r: 0
    projection: Callable[[Param, "Resolved", str], int] = float_projection
    weight: StateRule = dense_weight
    plain: StateRule = adam_states

    def param(self, p: Param, r: Resolved) -> ParamMemory:
        if not projects(p, r):
            return FullRank(self.plain).param(p, r)
        side = projection_side(p.matrix, r.proj_type)
        low = p.batch * lowrank_shapes(p.matrix, r.rank, side)[0]
        moments = moments_8bit(low) if r.method.eight_bit else adam_moments(low, r.states)
        states = moments + step_bytes(r) + self.extra(p, r) + _master(p.numel, r)
        # quantised linears (Q-GaLore's INT8) form their weight gradient from the output's
        # gradient, in the compute dtype (bf16 under autocast)
        grads = r.activations if r.method.quantized_weights else r.grads
        return ParamMemory(weights=self.weight(p, r), gradients=tensor_bytes(p.numel, grads),
                           optimizer_states=states, projection=self.projection(p, r, side))


def lora_pairs(p: Param, r: Resolved) -> tuple[int, int]:
    """Elements of lora_A (r x in) and lora_B (out x r) on an adapted matrix. peft's
    `lora.Embedding` reads a (V, h) table as in = V, out = h (`lora_embedding_A` (r, V),
    `lora_embedding_B` (h, r)); a GPT-2 `Conv1D` stores its weight (in, out). On a fused expert
    tensor (E, out, in) peft's `ParamWrapper` holds lora_A (r·E, in) and lora_B (out, r·E): one
    rank-r pair per expert."""
    m, n = p.matrix
    if p.role == "embedding":
        in_f, out_f = m, n
    else:
        conv = p.role == "block_linear" and r.model.family and r.model.family.fan_in_fan_out
        in_f, out_f = (m, n) if conv else (n, m)
    rank = r.rank_of(p)
    return rank * p.batch * in_f, out_f * rank * p.batch


#: a trainable tensor on an adapted matrix: (its name after the matrix's module, its shape)
TensorShape = tuple[str, tuple[int, ...]]


def lora_tensors(p: Param, r: Resolved) -> tuple[TensorShape, ...]:
    """LoRA's trainable tensors on an adapted matrix: A (r, in) and B (out, r); on fused experts
    peft's `ParamWrapper` stacks the E pairs, (r·E, in) and (out, r·E)."""
    a, b = lora_pairs(p, r)
    k = r.rank_of(p) * p.batch
    return ("lora_A.weight", (k, a // k)), ("lora_B.weight", (b // k, k))


def dora_tensors(p: Param, r: Resolved) -> tuple[TensorShape, ...]:
    """DoRA: A, B and the magnitude, one per output row (peft `lora_magnitude_vector`)."""
    a, b = lora_tensors(p, r)
    return a, b, ("lora_magnitude_vector.weight", (b[1][0],))


def svfit_tensors(p: Param, r: Resolved) -> tuple[TensorShape, ...]:
    """SVFit: the r trainable singular values (`lowrank.svfit.SVFitLinear.singular_values`)."""
    return (("singular_values", (r.rank_of(p),)),)


def welore_tensors(p: Param, r: Resolved) -> tuple[TensorShape, ...]:
    """WeLore's low-rank component: U (m, k) and V (k, n), both trained (`lowrank.welore`)."""
    m, n = p.shape
    k = r.rank_of(p)
    return ("U.weight", (m, k)), ("V.weight", (k, n))


def spec_rank(p: Param, r: Resolved) -> int:
    """The spec's rank, the same on every adapted matrix."""
    return r.rank


def reduced_rank(p: Param, r: Resolved) -> int:
    """WeLore's kept rank with the fraction ρ of the ranks pruned:
    k = min(m, n) − ⌊ρ·min(m, n)⌋ (at least 1). The reference prunes the normalised singular
    values below a threshold, matrix by matrix (`utils.adaptive_rank_pruning`); without the
    weights the planner spreads the reduction evenly over the targets."""
    side = min(p.shape)
    return max(1, side - math.floor(r.rank_reduction * side))


def base_weight(p: Param, r: Resolved) -> int:
    """The frozen original of an adapted matrix: the base format (quantised or not) for a block
    linear; an embedding or output layer stays in the frozen dtype (k-bit loading keeps them)."""
    return r.base_bytes(p) if p.role == "block_linear" else tensor_bytes(p.numel, r.frozen)


def svfit_frozen(p: Param, r: Resolved) -> int:
    """SVFit's frozen residual W_e (m, n) and singular vectors U_r (m, r), V_rᵀ (r, n), in the
    frozen dtype (the layer replaces the original weight)."""
    m, n = p.shape
    return tensor_bytes(m * n + r.rank_of(p) * (m + n), r.frozen)


def replaced_weight(p: Param, r: Resolved) -> int:
    """WeLore replaces the dense matrix by its factors: nothing of it stays."""
    return 0


def adapter_adam_states(p: Param, r: Resolved) -> int:
    """torch's AdamW on each trainable tensor of an adapted matrix: two moments in the state
    format and a `step` each."""
    numels = r.method.storage.numels(p, r)
    return sum(adam_moments(k, r.states) for k in numels) + len(numels) * step_bytes(r)


def lora_adam_states(p: Param, r: Resolved) -> int:
    """AdamW on A and B: two moments each in the state format, a `step` each."""
    a, b = lora_pairs(p, r)
    return adam_moments(a, r.states) + adam_moments(b, r.states) + 2 * step_bytes(r)


def ggpo_states(p: Param, r: Resolved) -> int:
    """LoRA-GGPO: AdamW on A and B, plus the gradient-norm EMA ḡ of the layer, a 0-d fp32
    tensor held by the perturbation (`lowrank.ggpo.GGPOPerturbation.grad_ema`)."""
    return adapter_adam_states(p, r) + 4


def lora_pro_states(p: Param, r: Resolved) -> int:
    """LoRA-Pro: full m x n moments of the equivalent gradient, kept on lora_A with its step."""
    return adam_moments(p.numel, r.states) + step_bytes(r)


def fully_trained(p: Param, r: Resolved) -> ParamMemory:
    """A parameter an adapter method trains in full: peft's `modules_to_save` (a trainable
    deep copy beside the frozen original, so the weights twice) or a role the method trains
    (WeLore's norms). Gradient in the parameter's dtype; torch's AdamW moments like it (or the
    spec's state format) and a `step`."""
    copies = 2 if p in r.saved_modules else 1
    master = _master(p.numel, r) if r.frozen != "fp32" else 0
    return ParamMemory(weights=copies * tensor_bytes(p.numel, r.frozen),
                       gradients=tensor_bytes(p.numel, r.frozen),
                       optimizer_states=adam_moments(p.numel, r.full_states) + step_bytes(r) + master)


@dataclass(frozen=True)
class Adapter:
    """A frozen base (in the frozen format, or quantised: `r.base_bytes`) with trainable tensors
    on the target matrices, and optionally fully trained parameters (`modules_to_save`, the
    layout's `trained_roles`).

    tensors(p, r): the trainable tensors on an adapted matrix, (name, shape) each (LoRA: A, B);
        they are held in the adapters' dtype, with gradients of that dtype and `states`.
    frozen(p, r): bytes of what stays frozen of an adapted matrix (LoRA: the original).
    rank(p, r): the rank on an adapted matrix (the spec's, or WeLore's per-matrix rule).
    component: where the trainable tensors are reported: "adapters" (added beside the base) or
        "weights" (they replace it: WeLore's factors).
    """
    tensors: Callable[[Param, "Resolved"], tuple[TensorShape, ...]] = lora_tensors
    frozen: StateRule = base_weight
    states: StateRule = adapter_adam_states
    rank: Callable[[Param, "Resolved"], int] = spec_rank
    trained_roles: tuple[str, ...] = ()
    component: str = "adapters"

    def numels(self, p: Param, r: Resolved) -> tuple[int, ...]:
        """Element counts of `tensors`."""
        return tuple(math.prod(shape) for _, shape in self.tensors(p, r))

    def param(self, p: Param, r: Resolved) -> ParamMemory:
        if r.trains_fully(p):
            return fully_trained(p, r)
        if not r.adapts(p):     # a quantised base quantises every block linear, adapted or not
            return ParamMemory(weights=r.base_bytes(p) if p.role == "block_linear"
                               else tensor_bytes(p.numel, r.frozen))
        numels = self.numels(p, r)
        held = sum(tensor_bytes(k, r.adapter) for k in numels)
        master = _master(sum(numels), r) if r.adapter != "fp32" else 0   # fp32 adapters are the master
        frozen = self.frozen(p, r)
        return ParamMemory(weights=frozen + (held if self.component == "weights" else 0),
                           gradients=held, optimizer_states=self.states(p, r) + master,
                           adapters=held if self.component == "adapters" else 0)


def param_memory(p: Param, r: Resolved) -> ParamMemory:
    """Bytes `p` costs under `r`'s method, its gradient counted as if alive. A parameter the
    forward never reads gets no gradient, so no optimizer state either."""
    memory = r.method.storage.param(p, r)
    if p.name in r.model.unused:
        return ParamMemory(weights=memory.weights)
    return memory


def basis_dim(p: Param, r: Resolved) -> int:
    """The dimension of the shared DCT basis a projected matrix uses (n for right, m for left)."""
    m, n = p.matrix
    return n if projection_side((m, n), r.proj_type) == "right" else m


# ---- tensors held once per optimizer ------------------------------------------------------

def no_shared(r: Resolved, rows: list[Row]) -> list[Row]:
    return []


def dct_bases(r: Resolved, rows: list[Row]) -> list[Row]:
    """One orthonormal DCT-II basis (d x d) per distinct projected dimension, in the projection
    format, shared by every matrix (`GaLoreDCTAdamW.shared_buffers`)."""
    dims = sorted({basis_dim(p, r) for p in r.model.params if projects(p, r)})
    return [Row(f"shared DCT basis {d}x{d}", (d, d), "shared", (),
                ParamMemory(projection=tensor_bytes(d * d, r.projection))) for d in dims]


def bnb_qmaps(r: Resolved, rows: list[Row]) -> list[Row]:
    """bitsandbytes optimizers keep their signed and unsigned 256-entry quantisation maps in
    state, shared by every 8-bit tensor of one optimizer (counted once, when any tensor is
    8-bit); with one optimizer per parameter (torchtune's optimizer_in_bwd) every 8-bit tensor
    has its own. memfit's own 8-bit optimizers keep them as module constants, so only the
    reference layout has them."""
    if not (r.method.bnb_state or (r.reference and r.method.eight_bit)):
        return []
    eight = sum(row.count for row in rows
                if row.memory.gradients and math.prod(row.shape) >= MIN_8BIT_NUMEL)
    if not eight:
        return []
    sets = eight if r.spec.per_param_optimizer else 1
    name = "bitsandbytes quantisation maps" + (f" (one set per optimizer: {sets})" if sets > 1 else "")
    return [Row(name, (2, 256), "shared", (), ParamMemory(optimizer_states=sets * BNB_QMAP_BYTES))]
