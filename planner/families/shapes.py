"""Parameter-shape building blocks shared by the family records (names as transformers uses)."""
from __future__ import annotations

from .record import ShapeRow

__all__ = ["linear", "norm"]


def linear(prefix: str, out_f: int, in_f: int, bias: bool, kind: str = "Linear") -> list[ShapeRow]:
    """An `nn.Linear` (weight (out, in)) or transformers' `Conv1D` (weight (in, out))."""
    shape = (in_f, out_f) if kind == "Conv1D" else (out_f, in_f)
    rows = [(f"{prefix}.weight", shape, kind)]
    return rows + ([(f"{prefix}.bias", (out_f,), kind)] if bias else [])


def norm(prefix: str, size: int, bias: bool, kind: str) -> list[ShapeRow]:
    """A normalisation layer's weight (and bias, for LayerNorm)."""
    return [(f"{prefix}.weight", (size,), kind)] + ([(f"{prefix}.bias", (size,), kind)] if bias else [])
