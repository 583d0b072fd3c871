"""Projected optimizers on FSDP2-sharded parameters: each rank keeps only its shard's moments.

FSDP2 (`fully_shard`) hands the optimizer DTensor parameters split by rows, ``Shard(0)`` on a
1-D mesh: rank k holds rows ``[k c, k c + m_k)`` of ``W (m, n)`` and of its gradient ``G``, with
``c = ceil(m / N)``. The projected skeleton then runs on local tensors, and only where the math
couples rows does a rank talk to the others:

========  ==============================  ===============================  ====================
side      ``R`` and its moments           ``P``                            communication
========  ==============================  ===============================  ====================
right     ``R_k = G_k Pᵀ`` (m_k, r): the   (r, n), the same on every rank   none per step
          rows of R, sharded like W
left      ``R = Σ_k P_kᵀ G_k`` (r, n),     rows ``P_k`` (m_k, r) of the      an all-reduce of R
          whole on every rank              whole (m, r) basis               (r·n) per step
========  ==============================  ===============================  ====================

(``std`` projects right when ``m >= n``.) The update ``project_back`` is row-separable on both
sides (right: ``N_k P``; left: ``P_k N``), so it needs nothing more. Bases: GaLore's SVD needs the
whole gradient, so at a refresh the rank all-gathers ``G`` (one (m, n) matrix alive for the
refresh), takes the same ``torch.linalg.svd`` as one device would and keeps P (right) or its rows
(left), rank 0's copy broadcast so every rank holds the same basis bit for bit. APOLLO's random
basis is regenerated from its seed on every rank, no communication. Norms: channel-wise factors
(Fira, APOLLO) reduce over the rank axis of R, one per row (right: local rows) or per column
(left: R is whole), so they are local; a Frobenius norm over the whole matrix — APOLLO-Mini's
tensor-wise factor on the right side, the norm-growth limiter of Fira and APOLLO — all-reduces
the squared local norms.

So the moments take ``m_k · r`` (right) or ``r · n`` (left) elements on rank k, the projection
``r · n`` (right) or ``m_k · r`` (left); plain parameters (embeddings, norms) keep AdamW moments of
their local shard. Nothing here knows FSDP itself: only DTensor and torch.distributed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["RowShard", "row_shard", "local", "full_gradient", "own_rows", "broadcast_", "project",
           "frobenius"]


@dataclass(frozen=True)
class RowShard:
    """Where a rank's rows of a row-sharded matrix sit: ``[start, start + rows)`` of ``shape``."""
    group: object
    shape: tuple[int, ...]
    start: int
    rows: int


def local(t):
    """This rank's part of a tensor (a DTensor's local shard), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def row_shard(param) -> RowShard | None:
    """The row sharding of a DTensor parameter, None for a plain tensor; a ValueError for any
    other layout (memfit's projected optimizers follow FSDP2's ``Shard(0)`` on a 1-D mesh)."""
    placements = getattr(param, "placements", None)
    if placements is None:
        return None
    from torch.distributed.tensor import Replicate, Shard
    mesh = param.device_mesh
    if mesh.ndim != 1 or not isinstance(placements[0], (Shard, Replicate)) or \
            (isinstance(placements[0], Shard) and placements[0].dim != 0):
        raise ValueError(f"projected optimizers support DTensors sharded by rows (Shard(0)) on a 1-D mesh, "
                         f"as FSDP2 shards them; got placements {placements} on a {mesh.ndim}-D mesh")
    if param.ndim > 2 and isinstance(placements[0], Shard):
        raise ValueError(f"a batch of matrices {tuple(param.shape)} (fused experts) sharded by Shard(0) is split "
                         "across its matrices, not by rows: the projected optimizers do not run it sharded; "
                         "train it under DDP")
    rows = param.to_local().shape[0]
    if isinstance(placements[0], Replicate):
        return RowShard(mesh.get_group(), tuple(param.shape), 0, rows)
    chunk = -(-param.shape[0] // mesh.size())          # torch.chunk's rule, as Shard(0) splits
    start = min(mesh.get_local_rank() * chunk, param.shape[0])
    return RowShard(mesh.get_group(), tuple(param.shape), start, rows)


def full_gradient(grad) -> torch.Tensor:
    """The whole gradient matrix on every rank (an all-gather; a plain tensor is returned as is)."""
    return grad.full_tensor() if hasattr(grad, "full_tensor") else grad


def own_rows(matrix: torch.Tensor, shard: RowShard | None) -> torch.Tensor:
    """This rank's rows of a whole (m, ·) matrix (a left basis), in their own compact storage."""
    if shard is None:
        return matrix
    # a clone, not .contiguous(): a row slice of a contiguous matrix is already contiguous and
    # would keep the whole matrix's storage alive
    return matrix[shard.start:shard.start + shard.rows].clone(memory_format=torch.contiguous_format)


def broadcast_(t: torch.Tensor, shard: RowShard | None) -> torch.Tensor:
    """Make `t` rank 0's copy on every rank of the shard's group (a basis computed on every rank
    from the same gradient must be the same tensor, to the bit)."""
    if shard is not None:
        dist.broadcast(t, src=dist.get_global_rank(shard.group, 0), group=shard.group)
    return t


def project(grad: torch.Tensor, proj, side: str, shard: RowShard | None) -> torch.Tensor:
    """``R`` of a row-sharded gradient: right: this rank's rows ``G_k Pᵀ``; left: the whole
    ``Σ_k P_kᵀ G_k`` (all-reduced). `grad` is the local gradient, `proj` the local basis."""
    from .projection import project as project_local
    low = project_local(grad, proj, side)
    if shard is not None and side == "left":
        dist.all_reduce(low, group=shard.group)
    if shard is not None and side == "full":
        raise ValueError("proj_type 'full' is not supported on sharded parameters: use a one-sided projection")
    return low


def frobenius(t: torch.Tensor, shard: RowShard | None, whole: bool = False) -> torch.Tensor:
    """``||T||_F`` of the whole matrix whose rows this rank holds (`whole`: `t` is already the
    same whole tensor on every rank); ``(E,)`` norms for a batch of E matrices."""
    dims = (-2, -1) if t.ndim > 2 else None      # a batch of matrices (fused experts): one norm each
    if shard is None or whole:
        return torch.linalg.vector_norm(t, dim=dims)
    sq = torch.linalg.vector_norm(t.float(), dim=dims).square()
    shape = sq.shape
    sq = sq.reshape(-1)
    dist.all_reduce(sq, group=shard.group)
    return sq.sqrt().reshape(shape).to(t.dtype)
