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
from .models import Param
from .storage import (BNB_QMAP_BYTES, MIN_8BIT_NUMEL, STEP_BYTES, ParamMemory, adam_moments,
                      int4_packed, int8_weight, lowrank_shapes, moments_8bit, projection_side)

if TYPE_CHECKING:
    from .resolve import Resolved

__all__ = ["FullRank", "Projected", "Adapter", "param_memory", "basis_dim",
           "adam_states", "adam8_states", "adafactor_states", "sgd_states", "step_bytes",
           "fira_extra", "apollo_extra", "qgalore_extra", "gradnorm_extra", "gradnorm_reference_extra",
           "float_projection", "int4_projection", "dct_indices", "seeded_projection",
           "dense_weight", "int8_trained_weight", "lora_pairs", "lora_pro_states", "lora_adam_states",
           "no_shared", "dct_bases", "bnb_qmaps"]

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
    full fp32 one for a vector) plus the 0-d fp32 `RMS`; the step is a Python int."""
    if len(p.shape) >= 2:
        return 4 * (math.prod(p.shape[:-1]) + p.shape[-1] + 1)
    return 4 * (p.numel + 1)


def sgd_states(p: Param, r: Resolved) -> int:
    """torch SGD with momentum: `momentum_buffer` only."""
    return tensor_bytes(p.numel, r.states)


def gradnorm_reference_extra(p: Param, r: Resolved) -> int:
    """The reference GradNormLoRP weight-normalises every parameter: a full copy v, the magnitude
    g (one per row; one for a vector) and g's two moments, all in the parameter dtype."""
    if not r.reference:
        return 0
    g = p.shape[0] if len(p.shape) == 2 else 1
    return tensor_bytes(p.numel, r.weights) + 3 * tensor_bytes(g, r.weights)


def _with_gradnorm_reference(rule: StateRule) -> StateRule:
    return lambda p, r: rule(p, r) + gradnorm_reference_extra(p, r)


# ---- low-rank extras of a projected matrix ------------------------------------------------

def fira_extra(p: Param, r: Resolved) -> int:
    """The norm-growth limiter's previous residual norm: 0-d fp32 (reference: gradient dtype)."""
    return tensor_bytes(1, r.grads) if r.reference else 4


def apollo_extra(p: Param, r: Resolved) -> int:
    """The projection's seed (int64) and the limiter norm (fp32); the reference keeps the
    limiter scalar in the gradient dtype (and the projection itself, see `seeded_projection`)."""
    return tensor_bytes(1, r.grads) if r.reference else 8 + 4


def qgalore_extra(p: Param, r: Resolved) -> int:
    """The last five projections' cosine similarities (fp32) and the current gap (int64)."""
    return 0 if r.reference else 5 * 4 + 8


def gradnorm_extra(p: Param, r: Resolved) -> int:
    """The magnitude's moments (m,) in the moment format and `row_scale` ‖v‖/g (m,) fp32, which
    replaces the reference's full copy of v (`gradnorm_reference_extra`)."""
    if r.reference:
        return gradnorm_reference_extra(p, r)
    moments = moments_8bit(p.shape[0]) if r.method.eight_bit else adam_moments(p.shape[0], r.states)
    return moments + 4 * p.shape[0]


# ---- projections ------------------------------------------------------------------------------

def float_projection(p: Param, r: Resolved, side: str) -> int:
    """GaLore's projection matrices in the projection format (the gradient's by default)."""
    return sum(tensor_bytes(k, r.projection) for k in lowrank_shapes(p.shape, r.rank, side)[1])


def int4_projection(p: Param, r: Resolved, side: str) -> int:
    """Q-GaLore's INT4 projection: two codes a byte (memfit) or one (reference), bf16 scale/zero."""
    return sum(int4_packed(k, packed=not r.reference) for k in lowrank_shapes(p.shape, r.rank, side)[1])


def dct_indices(p: Param, r: Resolved, side: str) -> int:
    """SVD-free DCT: r int32 column indices; the bases are shared (`dct_bases`)."""
    return 4 * r.rank


def seeded_projection(p: Param, r: Resolved, side: str) -> int:
    """APOLLO regenerates its random projection from the seed; the reference stores it."""
    if not r.reference:
        return 0
    return sum(tensor_bytes(k, r.grads) for k in lowrank_shapes(p.shape, r.rank, side)[1])


def dense_weight(p: Param, r: Resolved) -> int:
    return tensor_bytes(p.numel, r.weights)


def int8_trained_weight(p: Param, r: Resolved) -> int:
    """Q-GaLore's INT8 block linears: uint8 codes and bf16 scale/zero per 256."""
    return int8_weight(p.numel)


# ---- the three layouts ------------------------------------------------------------------------

@dataclass(frozen=True)
class FullRank:
    """Every parameter trained: weights, gradient, `states` (+ fp32 master in mixed precision)."""
    states: StateRule = adam_states

    def param(self, p: Param, r: Resolved) -> ParamMemory:
        return ParamMemory(weights=tensor_bytes(p.numel, r.weights),
                           gradients=tensor_bytes(p.numel, r.grads),
                           optimizer_states=self.states(p, r) + _master(p.numel, r))


@dataclass(frozen=True)
class Projected:
    """Block linears: full weights and gradients, `lowrank` moments of the projected gradient,
    the method's `extra` state and `projection`; everything else: plain states (`plain`)."""
    extra: StateRule = lambda p, r: 0
    projection: Callable[[Param, "Resolved", str], int] = float_projection
    weight: StateRule = dense_weight
    plain: StateRule = adam_states

    def param(self, p: Param, r: Resolved) -> ParamMemory:
        if p.role != "block_linear":
            return FullRank(self.plain).param(p, r)
        side = projection_side(p.shape, r.proj_type)
        low, _ = lowrank_shapes(p.shape, r.rank, side)
        moments = moments_8bit(low) if r.method.eight_bit else adam_moments(low, r.states)
        states = moments + step_bytes(r) + self.extra(p, r) + _master(p.numel, r)
        # quantised linears (Q-GaLore's INT8) form their weight gradient from the output's
        # gradient, in the compute dtype (bf16 under autocast)
        grads = r.activations if r.method.quantized_weights else r.grads
        return ParamMemory(weights=self.weight(p, r), gradients=tensor_bytes(p.numel, grads),
                           optimizer_states=states, projection=self.projection(p, r, side))


def lora_pairs(p: Param, r: Resolved) -> tuple[int, int]:
    """Elements of lora_A (r x in) and lora_B (out x r) on an adapted matrix."""
    m, n = p.shape
    in_f = m if r.model.family and r.model.family.fan_in_fan_out else n
    out_f = n if in_f == m else m
    return r.rank * in_f, out_f * r.rank


def lora_adam_states(p: Param, r: Resolved) -> int:
    """AdamW on A and B: two moments each in the state format, a `step` each."""
    a, b = lora_pairs(p, r)
    return adam_moments(a, r.states) + adam_moments(b, r.states) + 2 * step_bytes(r)


def lora_pro_states(p: Param, r: Resolved) -> int:
    """LoRA-Pro: full m x n moments of the equivalent gradient, kept on lora_A with its step."""
    return adam_moments(p.numel, r.states) + step_bytes(r)


@dataclass(frozen=True)
class Adapter:
    """A frozen base (in the frozen format, or quantised: `r.base_bytes`) with adapters on the
    target linears, in the adapters' dtype with gradients of that dtype and `states`."""
    states: StateRule = lora_adam_states

    def param(self, p: Param, r: Resolved) -> ParamMemory:
        if p.role != "block_linear":
            return ParamMemory(weights=tensor_bytes(p.numel, r.frozen))
        if not r.adapts(p):     # a quantised base quantises every block linear, adapted or not
            return ParamMemory(weights=r.base_bytes(p))
        a, b = lora_pairs(p, r)
        master = _master(a + b, r) if r.adapter != "fp32" else 0   # fp32 adapters are the master
        return ParamMemory(weights=r.base_bytes(p), gradients=tensor_bytes(a + b, r.adapter),
                           optimizer_states=self.states(p, r) + master,
                           adapters=tensor_bytes(a + b, r.adapter))


def param_memory(p: Param, r: Resolved) -> ParamMemory:
    """Bytes `p` costs under `r`'s method, its gradient counted as if alive. A parameter the
    forward never reads gets no gradient, so no optimizer state either."""
    memory = r.method.storage.param(p, r)
    if p.name in r.model.unused:
        return ParamMemory(weights=memory.weights)
    return memory


def basis_dim(p: Param, r: Resolved) -> int:
    """The dimension of the shared DCT basis a projected matrix uses (n for right, m for left)."""
    side = projection_side(p.shape, r.proj_type)
    return p.shape[1] if side == "right" else p.shape[0]


# ---- tensors held once per optimizer ------------------------------------------------------

def no_shared(r: Resolved, rows: list[Row]) -> list[Row]:
    return []


def dct_bases(r: Resolved, rows: list[Row]) -> list[Row]:
    """One orthonormal DCT-II basis (d x d) per distinct projected dimension, in the projection
    format, shared by every matrix (`GaLoreDCTAdamW.shared_buffers`)."""
    dims = sorted({basis_dim(p, r) for p in r.model.selected})
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
