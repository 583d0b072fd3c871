"""The frozen base of an adapter method (`TrainingSpec.base_quant`), one record per format: how
its block linears are stored and what its matmul keeps for backward.

- none: the linears in the frozen dtype; a frozen `nn.Linear` saves nothing for backward.
- nf4 (QLoRA; bitsandbytes `Linear4bit`, `MatMul4Bit`): packed 4-bit codes and the `QuantState`
  (`planner.storage.nf4_weight`); the matmul keeps only the packed weight for backward
  (`ctx.tensors = (None, B)`), so it saves no more than a frozen `nn.Linear`.
- int8 (LLM.int8; bitsandbytes `Linear8bitLt` with `has_fp16_weights=False`): int8 codes and a
  per-row fp32 absmax (`planner.storage.int8_rowwise_weight`). Its autograd functions keep the
  input for backward as a context attribute, not a saved tensor (`MatMul8bitLt`:
  `ctx.tensors = (CAt, subA, A)`; the CPU path `MatMul8bitFp`: `ctx.A = A`), whenever the input
  needs a gradient (with none, no graph node, so no context, is made). So every int8 linear
  keeps its input like a trained linear, and activation checkpointing, which only drops saved
  tensors, does not drop it. On CUDA `subA` adds the input's outlier columns (|x| > 6, a few
  feature dimensions, data-dependent): memfit assumes none.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .storage import int8_rowwise_weight, nf4_weight

__all__ = ["Base", "BASES", "get_base"]


@dataclass(frozen=True)
class Base:
    id: str
    name: str
    weight: Callable | None         # (shape, double_quant) -> bytes; None: the frozen dtype
    keeps_inputs: bool = False      # its linears keep their inputs outside autograd's saved tensors


BASES = {b.id: b for b in [
    Base("none", "unquantised", None),
    Base("nf4", "NF4", lambda shape, double_quant: nf4_weight(math.prod(shape), double_quant=double_quant)),
    Base("int8", "LLM.int8", lambda shape, double_quant: int8_rowwise_weight(shape), keeps_inputs=True),
]}


def get_base(quant: str | None) -> Base:
    """The base record of a `base_quant` value (None: unquantised)."""
    return BASES[quant or "none"]
