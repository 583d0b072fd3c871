"""Gradient projection math: side rule, SVD basis, project / project back, validation.

Pure functions on tensors; nothing here keeps state. Notation follows GaLore
(``galore_torch/galore_projector.py``, pip galore-torch 1.0): a gradient ``G`` of shape ``(m, n)``,
rank ``r``, a projection ``P``:

======  ==========================  ===========================  ============================
side    ``P``                       ``R = project(G, P)``        ``project_back(N, P)``
======  ==========================  ===========================  ============================
right   ``(r, n)`` rows orthonormal  ``G @ Pᵀ``  ``(m, r)``        ``N @ P``  ``(m, n)``
left    ``(m, r)`` cols orthonormal  ``Pᵀ @ G``  ``(r, n)``        ``P @ N``  ``(m, n)``
full    ``(L (m, r), Rt (r, n))``   ``Lᵀ @ G @ Rtᵀ``  ``(r, r)``   ``L @ N @ Rt``  ``(m, n)``
======  ==========================  ===========================  ============================

Side rule from ``proj_type`` (the GaLore code's): ``std`` = right if ``m >= n`` else left (so the
projection is ``r x min(m, n)`` and the moments ``r x max(m, n)``), ``reverse_std`` the opposite,
``left`` / ``right`` forced, ``full`` both sides. ``project_back`` does *not* multiply by the
method's scale α; callers multiply (as GaLore's code does, after projecting back).

A 3-D tensor ``(E, m, n)`` (transformers 5's fused MoE experts) is a batch of ``E`` matrices:
every function works on the last two dimensions, so each expert gets its own basis ``P[e]``
(stacked ``(E, r, n)`` / ``(E, m, r)``), its own low-rank gradient and, in the optimizers, its own
moments. Results equal a loop over the experts (``tests/lowrank/test_experts.py``).
"""

from __future__ import annotations

import numbers

import torch

__all__ = [
    "PROJ_TYPES",
    "projection_side",
    "low_rank_shape",
    "rank_axis",
    "svd_basis",
    "project",
    "project_back",
    "check_rank",
    "check_positive_int",
    "check_positive",
    "check_proj_type",
]

PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")


def check_proj_type(proj_type) -> None:
    """Raise ``ValueError`` unless ``proj_type`` is one of :data:`PROJ_TYPES`."""
    if proj_type not in PROJ_TYPES:
        raise ValueError(f"unknown proj_type {proj_type!r}; expected one of {', '.join(PROJ_TYPES)}")


def check_positive_int(name: str, value) -> None:
    """Raise ``ValueError`` naming ``value`` unless it is an integer ``>= 1``.

    >>> check_positive_int("update_proj_gap", 0)
    Traceback (most recent call last):
    ...
    ValueError: update_proj_gap must be a positive integer, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_positive(name: str, value) -> None:
    """Raise ``ValueError`` naming ``value`` unless it is a real number ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_rank(rank, shape: tuple[int, ...] | torch.Size | None = None) -> None:
    """Raise ``ValueError`` unless ``1 <= rank <= min(m, n)`` of a matrix (or a batch of
    matrices) of ``shape``.

    >>> check_rank(8, (4, 16))
    Traceback (most recent call last):
    ...
    ValueError: rank 8 exceeds min(m, n) = 4 of a 4 x 16 matrix
    """
    check_positive_int("rank", rank)
    if shape is not None and len(shape) >= 2 and rank > min(shape[-2:]):
        m, n = shape[-2:]
        raise ValueError(f"rank {rank} exceeds min(m, n) = {min(m, n)} of a {m} x {n} matrix")


def projection_side(proj_type: str, shape: tuple[int, ...] | torch.Size) -> str:
    """``'left'``, ``'right'`` or ``'full'`` for a gradient of ``shape`` under ``proj_type``.

    >>> projection_side("std", (4096, 11008)), projection_side("std", (11008, 4096))
    ('left', 'right')
    >>> projection_side("reverse_std", (11008, 4096))
    'left'
    """
    check_proj_type(proj_type)
    if proj_type in ("left", "right", "full"):
        return proj_type
    tall = shape[-2] >= shape[-1]
    if proj_type == "std":
        return "right" if tall else "left"
    return "left" if tall else "right"


def low_rank_shape(shape: tuple[int, ...] | torch.Size, rank: int, side: str) -> tuple[int, ...]:
    """Shape of ``R = project(G, P)`` for ``G`` of ``shape`` (leading batch dimensions kept).

    >>> low_rank_shape((768, 2048), 256, "left"), low_rank_shape((8, 2048, 768), 256, "right")
    ((256, 2048), (8, 2048, 256))
    """
    *batch, m, n = shape
    return (*batch, *{"right": (m, rank), "left": (rank, n), "full": (rank, rank)}[side])


def rank_axis(side: str) -> int:
    """The axis of ``R`` that has length ``r`` (right: -1, left: -2).

    Fira's and APOLLO's channel-wise factors reduce over this axis, giving one factor per row
    (right) or column (left) of the full gradient (of each expert's matrix, batched).
    """
    if side == "full":
        raise ValueError("channel-wise scaling needs a one-sided projection, got side 'full'")
    return -1 if side == "right" else -2


def svd_basis(grad: torch.Tensor, rank: int, side: str, dtype: torch.dtype | None = None):
    """Top-``rank`` singular vectors of ``grad`` as GaLore takes them.

    SVD (``torch.linalg.svd(full_matrices=False)``) runs in fp32, the result is cast to ``dtype``
    (default ``grad.dtype``) into its own contiguous storage. Returns ``Vh[:r]`` ``(r, n)`` for right, ``U[:, :r]`` ``(m, r)`` for
    left, and the pair ``(U[:, :r], Vh[:r])`` for full.
    """
    dtype = dtype or grad.dtype
    if grad.ndim > 2:
        return _batched_basis(grad, rank, side, dtype)
    u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    # Own, compact storage: a slice would keep all of U or Vh alive (the reference code keeps
    # the full min(m, n)² Vh behind every fp32 right projection).
    own = lambda t: t.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    if side == "right":
        return own(vh[:rank])
    if side == "left":
        return own(u[:, :rank])
    return own(u[:, :rank]), own(vh[:rank])


def _batched_basis(grad: torch.Tensor, rank: int, side: str, dtype: torch.dtype):
    """``svd_basis`` of every matrix of a ``(E, m, n)`` batch, one at a time (one matrix's SVD
    workspace, not E), into stacked ``(E, r, n)`` / ``(E, m, r)`` bases."""
    flat = grad.reshape(-1, *grad.shape[-2:])
    parts = [svd_basis(g, rank, side, dtype) for g in flat]
    stack = lambda ts: torch.stack(ts).reshape(*grad.shape[:-2], *ts[0].shape)
    if side == "full":
        return stack([l for l, _ in parts]), stack([r for _, r in parts])
    return stack(parts)


def _as(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == like.dtype else t.to(like.dtype)


def project(grad: torch.Tensor, proj, side: str) -> torch.Tensor:
    """Low-rank gradient ``R`` (see the module table); ``proj`` is cast to ``grad.dtype``."""
    if side == "right":
        return grad @ _as(proj, grad).mT
    if side == "left":
        return _as(proj, grad).mT @ grad
    left, right = proj
    return _as(left, grad).mT @ grad @ _as(right, grad).mT


def project_back(low: torch.Tensor, proj, side: str) -> torch.Tensor:
    """Full-size ``(..., m, n)`` tensor from a low-rank one (no scale α)."""
    if side == "right":
        return low @ _as(proj, low)
    if side == "left":
        return _as(proj, low) @ low
    left, right = proj
    return _as(left, low) @ low @ _as(right, low)
