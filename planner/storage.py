"""Bytes each method stores for one parameter: small pure rules, one per storage layout.

Every rule states its layout; `docs/storage-contract.md` lists the tensors memfit's own `lowrank`
optimizers hold, and the tests check the planner against the bytes those optimizers really hold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .dtypes import tensor_bytes

__all__ = ["ParamMemory", "STEP_BYTES", "BNB_QMAP_BYTES", "BLOCK_8BIT", "MIN_8BIT_NUMEL",
           "moments_8bit", "adam_moments", "int8_weight", "int4_packed", "nf4_weight", "int8_rowwise_weight",
           "lowrank_shapes", "projection_side"]

STEP_BYTES = 4               # torch.optim.AdamW keeps `step` as a 0-d float32 tensor; so does memfit
BLOCK_8BIT = 256             # bitsandbytes 0.50 block size for 8-bit optimizer states
MIN_8BIT_NUMEL = 4096        # bitsandbytes keeps fp32 states below this many elements
BNB_QMAP_BYTES = 2 * 256 * 4  # bitsandbytes' signed + unsigned dynamic maps, once per optimizer
QUANT_GROUP = 256            # Q-GaLore's group size for INT8 weights and INT4 projections
NF4_BLOCK = 64               # bitsandbytes quantize_4bit default block size
NF4_NESTED_BLOCK = 256       # double quantisation of the absmax (compress_statistics=True)


@dataclass(frozen=True)
class ParamMemory:
    """Bytes one parameter costs, per component."""
    weights: int = 0
    gradients: int = 0
    optimizer_states: int = 0
    projection: int = 0
    adapters: int = 0

    def __add__(self, other: "ParamMemory") -> "ParamMemory":
        return ParamMemory(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def scaled(self, k: int) -> "ParamMemory":
        return ParamMemory(*(k * a for a in self.astuple()))

    def astuple(self) -> tuple[int, int, int, int, int]:
        return (self.weights, self.gradients, self.optimizer_states, self.projection, self.adapters)

    @property
    def total(self) -> int:
        return sum(self.astuple())


def adam_moments(numel: int, dtype: str) -> int:
    """`exp_avg` + `exp_avg_sq` dense in `dtype`: 2·numel·bytes."""
    return 2 * tensor_bytes(numel, dtype)


def moments_8bit(numel: int) -> int:
    """Two block-wise 8-bit moments (bitsandbytes layout): uint8 codes + fp32 absmax per 256.

    Below 4096 elements bitsandbytes keeps both moments in fp32 (`Optimizer2State.init_state`).
    >>> moments_8bit(4096), moments_8bit(100)
    (8320, 800)
    """
    if numel < MIN_8BIT_NUMEL:
        return 2 * 4 * numel
    return 2 * (numel + 4 * math.ceil(numel / BLOCK_8BIT))


def int8_weight(numel: int) -> int:
    """Q-GaLore INT8 weight: uint8 codes + bf16 scale and zero per group of 256."""
    return numel + 2 * 2 * math.ceil(numel / QUANT_GROUP)


def int4_packed(numel: int, packed: bool = True) -> int:
    """Q-GaLore INT4 projection: codes two per byte (memfit) or one per byte (reference code),
    + bf16 scale and zero per group of 256."""
    codes = math.ceil(numel / 2) if packed else numel
    return codes + 2 * 2 * math.ceil(numel / QUANT_GROUP)


def nf4_weight(numel: int, double_quant: bool = True) -> int:
    """bitsandbytes NF4: packed codes (2 per byte) and the `QuantState` (bitsandbytes 0.50).

    With double quantisation (QLoRA's default, `compress_statistics=True`): one uint8 absmax per
    64-block, an fp32 absmax per 256 absmax-blocks, and per tensor the 16-entry fp32 NF4 code,
    the nested 256-entry fp32 code and an fp32 offset (measured). Without it: an fp32 absmax per
    64-block and the 16-entry code. QLoRA paper: 4 + 8/64 + 32/(64·256) = 4.127 bits per
    parameter with double quantisation, 4 + 32/64 = 4.5 without, plus the per-tensor constants.
    """
    blocks = math.ceil(numel / NF4_BLOCK)
    if not double_quant:
        return math.ceil(numel / 2) + 4 * blocks + 4 * 16
    return (math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK)
            + 4 * (16 + 256 + 1))


def int8_rowwise_weight(shape: tuple[int, ...]) -> int:
    """bitsandbytes LLM.int8 (`Linear8bitLt`, `has_fp16_weights=False`): int8 codes `CB` (m, n)
    and one fp32 absmax per output row `SCB` (m,)."""
    m = shape[0]
    return math.prod(shape) + 4 * m


def projection_side(shape: tuple[int, int], proj_type: str) -> str:
    """GaLore's side rule (`galore_projector.py`): `std` projects right when m >= n, else left."""
    m, n = shape
    if proj_type == "std":
        return "right" if m >= n else "left"
    if proj_type == "reverse_std":
        return "left" if m >= n else "right"
    return proj_type


def lowrank_shapes(shape: tuple[int, int], rank: int, side: str) -> tuple[int, tuple[int, ...]]:
    """(numel of the low-rank gradient R, numels of the projection matrices) for one matrix.

    right: R (m, r), P (r, n); left: R (r, n), P (m, r); full: R (r, r), P (m, r) and (r, n).
    """
    m, n = shape
    if side == "right":
        return m * rank, (rank * n,)
    if side == "left":
        return rank * n, (m * rank,)
    return rank * rank, (m * rank, rank * n)
