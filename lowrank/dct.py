"""SVD-free GaLore: columns of a fixed orthonormal DCT basis chosen by alignment with the gradient.

Idea from Modoranu et al., "SVD-Free Low-Rank Adaptive Gradient Optimization for Large Language
Models" (arXiv 2505.17967; code IST-DASLab ``fft_low_rank/dct_adamw.py``). For a projected
dimension ``d`` (``n`` for the right side, ``m`` for the left), the orthonormal DCT-II basis::

    Q[j, k] = sqrt(2 / d) · c_k · cos(π (2j + 1) k / (2d)),   c_0 = 1/√2, c_k = 1   (columns orthonormal)

is built once per distinct ``(d, dtype, device)`` and shared by every matrix
(``optimizer.shared_buffers``). Every ``update_proj_gap`` steps a matrix re-selects its ``r``
columns with one matmul and a top-k::

    right: S = G @ Q  (m, d) ; score_k = ||S[:, k]||₂ ; idx = top-r ; R = S[:, idx] ; P = Q[:, idx]ᵀ
    left:  S = Qᵀ @ G (d, n) ; score_k = ||S[k, :]||₂ ; idx = top-r ; R = S[idx, :] ; P = Q[:, idx]

then proceeds exactly as GaLore (:mod:`lowrank.galore`, scale α included). Because ``Q`` is
orthonormal, the ℓ2 top-r selection maximises the captured energy ``||project(G)||_F`` among all
``r``-subsets of DCT columns (the reference code scores by ℓ1 by default). ``idx`` is kept sorted
ascending, so moments stay aligned to frequencies when the selection does not change.
Stored per matrix: ``indices`` (int32, ``(r,)``) instead of an ``r x min(m, n)`` projection; a
fused expert tensor ``(E, m, n)`` selects per expert (one batched matmul, ``indices`` ``(E, r)``).
"""

from __future__ import annotations

import math

import torch

from .projected_adamw import BasisRule, ProjectedAdamW, register_basis

__all__ = ["dct_basis", "select_dct_columns", "dct_projection", "DCTBasis", "GaLoreDCTAdamW"]


def dct_basis(d: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Orthonormal DCT-II basis ``(d, d)``; column ``k`` is frequency ``k`` (built in fp64).

    >>> q = dct_basis(8)
    >>> bool(torch.allclose(q.T @ q, torch.eye(8), atol=1e-6))
    True
    """
    j = torch.arange(d, dtype=torch.float64, device=device)
    q = torch.cos(math.pi * (2 * j[:, None] + 1) * j[None, :] / (2 * d)) * math.sqrt(2.0 / d)
    q[:, 0] /= math.sqrt(2.0)
    return q.to(dtype)


def select_dct_columns(grad: torch.Tensor, basis: torch.Tensor, rank: int, side: str):
    """``(indices int32 sorted, R)``: the ``rank`` DCT columns best aligned with ``grad`` (with
    each matrix of a batch ``(E, m, n)``: indices ``(E, r)``)."""
    q = basis.to(grad.dtype)
    if grad.ndim > 2:
        return _select_batched(grad, q, rank, side)
    if side == "right":
        s = grad @ q                                             # (m, d)
        idx = torch.topk(torch.linalg.vector_norm(s, dim=0), rank).indices.sort().values
        return idx.to(torch.int32), s.index_select(1, idx)
    if side == "left":
        s = q.T @ grad                                           # (d, n)
        idx = torch.topk(torch.linalg.vector_norm(s, dim=1), rank).indices.sort().values
        return idx.to(torch.int32), s.index_select(0, idx)
    raise ValueError(f"DCT projection is one-sided; got side {side!r}")


def _select_batched(grad: torch.Tensor, q: torch.Tensor, rank: int, side: str):
    """`select_dct_columns` for every matrix of a batch at once."""
    if side not in ("right", "left"):
        raise ValueError(f"DCT projection is one-sided; got side {side!r}")
    s = grad @ q if side == "right" else q.mT @ grad             # (E, m, d) / (E, d, n)
    axis = -1 if side == "right" else -2                          # the frequency axis
    scores = torch.linalg.vector_norm(s, dim=-2 if side == "right" else -1)       # (E, d)
    idx = torch.topk(scores, rank, dim=-1).indices.sort(dim=-1).values          # (E, r)
    low = torch.take_along_dim(s, idx.unsqueeze(-2 if side == "right" else -1), dim=axis)
    return idx.to(torch.int32), low


def dct_projection(basis: torch.Tensor, indices: torch.Tensor, side: str) -> torch.Tensor:
    """The projection for :func:`lowrank.projection.project`: ``(r, n)`` right, ``(m, r)`` left
    (``(E, r, n)`` / ``(E, m, r)`` for a batch's ``(E, r)`` indices)."""
    if indices.ndim > 1:
        d = basis.shape[0]
        cols = basis.index_select(1, indices.reshape(-1)).reshape(d, *indices.shape)   # (d, E, r)
        cols = cols.movedim(0, -2)                                                       # (E, d, r)
        return cols.mT if side == "right" else cols
    cols = basis.index_select(1, indices)
    return cols.T if side == "right" else cols


class DCTBasis(BasisRule):
    """Basis rule ``'dct'``: state ``indices`` (int32, r); bases in ``opt.shared_buffers``."""

    name = "dct"
    state_key = "indices"
    sides = ("left", "right")

    @staticmethod
    def shared_basis(opt, d: int, dtype: torch.dtype, device) -> torch.Tensor:
        key = f"dct:{d}:{str(dtype).removeprefix('torch.')}:{device}"
        if key not in opt.shared_buffers:
            opt.shared_buffers[key] = dct_basis(d, dtype, device)
        return opt.shared_buffers[key]

    def _basis(self, opt, group, grad, side):
        d = grad.shape[-1] if side == "right" else grad.shape[-2]
        return self.shared_basis(opt, d, group["proj_dtype"] or grad.dtype, grad.device)

    def refresh(self, opt, param, grad, state, group, side):
        state["indices"], low = select_dct_columns(grad, self._basis(opt, group, grad, side), group["rank"], side)
        return low

    def matrices(self, opt, param, state, group, grad, side):
        return dct_projection(self._basis(opt, group, grad, side), state["indices"], side)


register_basis(DCTBasis())


class GaLoreDCTAdamW(ProjectedAdamW):
    """GaLore with the DCT column-selection basis (``galore-dct``); GaLore's group keys."""

    basis_rule = "dct"
    residual_rule = "none"
