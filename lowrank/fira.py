"""Fira (Chen et al., arXiv 2410.01623): GaLore plus the scaled full-rank residual of the gradient.

Drop-in for ``fira.FiraAdamW`` (pip fira 1.0.2): group keys ``rank``, ``update_proj_gap``,
``alpha``, ``proj_type``. With GaLore's ``P``, ``R = project(G)``, ``N = m / denom``, step size
``s`` (``optimizer_torch/fira_adamw.py``, followed exactly)::

    φ = ||N||_rank-axis / (||R||_rank-axis + 1e-8)        # one factor per row (right) / column (left)
    S = (G - α · project_back(R)) · φ                     # α INSIDE the residual, S itself not scaled
    S <- S / (max(||S|| / (||S_prev|| + 1e-8), γ) / γ)    # norm-growth limiter, γ = 1.01;
    ||S_prev|| <- ||S||  (after limiting)                 #   step 1 only records ||S||
    W <- W - s · (α · project_back(N) + S)

The paper (Algorithm 1) instead writes ``S = (I - P Pᵀ) G · φ`` (no α) and
``G̃ = α (P N + S)``, i.e. α on both terms. memfit follows the code, so that it matches the
package the paper's numbers came from; the two agree when α = 1.

State per projected matrix: GaLore's plus ``scaling_grad`` (0-d float32, ``||S_prev||``).
The pure pieces :func:`channel_scaling`, :func:`tensor_scaling`, :func:`norm_growth_limit_`
are shared with APOLLO (:mod:`lowrank.apollo`). A fused expert tensor ``(E, m, n)`` is E
matrices: each gets its own factors and its own limiter norm (``scaling_grad`` of shape ``(E,)``).
"""

from __future__ import annotations

import torch

from .projected_adamw import ProjectedAdamW, ProjectedGrad, UpdateRule, register_update
from .projection import project_back, rank_axis
from .sharded import frobenius

__all__ = [
    "LIMITER_GAMMA",
    "channel_scaling",
    "tensor_scaling",
    "norm_growth_limit_",
    "fira_residual",
    "FiraUpdate",
    "FiraAdamW",
]

LIMITER_GAMMA = 1.01  # hard-coded in the Fira and APOLLO code; paper Table 15's best value


def channel_scaling(direction: torch.Tensor, low: torch.Tensor, side: str) -> torch.Tensor:
    """``||N|| / (||R|| + 1e-8)`` over the rank axis, shaped to broadcast against ``(..., m, n)``.

    Right side: ``(..., m, 1)`` (one factor per row); left side: ``(..., 1, n)`` (one per column;
    ``(n,)`` for a single matrix).
    """
    axis = rank_axis(side)
    num = torch.linalg.vector_norm(direction, dim=axis)
    factor = num / (torch.linalg.vector_norm(low.to(num.dtype), dim=axis) + 1e-8)
    if axis == -1:
        return factor.unsqueeze(-1)
    return factor.unsqueeze(-2) if factor.ndim > 1 else factor


def _per_matrix(values: torch.Tensor) -> torch.Tensor:
    """``(E,)`` per-matrix scalars shaped to broadcast against ``(E, m, n)`` (0-d stays 0-d)."""
    return values[..., None, None] if values.ndim else values


def tensor_scaling(direction: torch.Tensor, low: torch.Tensor, shard=None, whole: bool = False) -> torch.Tensor:
    """``||N||_F / (||R||_F + 1e-8)`` per matrix: 0-d (APOLLO-Mini), ``(E, 1, 1)`` for a batch.
    With a row `shard` (FSDP2) the norms are of the whole matrices (`lowrank.sharded.frobenius`;
    `whole`: N and R are whole)."""
    num = frobenius(direction, shard, whole)
    return _per_matrix(num / (frobenius(low.to(num.dtype), shard, whole) + 1e-8))


def norm_growth_limit_(update: torch.Tensor, prev_norm: torch.Tensor, first: bool,
                       gamma: float = LIMITER_GAMMA, norm: torch.Tensor | None = None) -> torch.Tensor:
    """Fira's limiter: shrink ``update`` in place so its norm grows at most ``gamma``× per step.

    ``prev_norm`` (0-d; ``(E,)`` for a batch of E matrices, each limited on its own) is read and
    overwritten with the limited norm; on the ``first`` step it only records ``||update||``. No
    host synchronisation (all tensor ops). ``norm``: ``||update||`` when the caller has it (the
    whole matrix's, for a row-sharded update).
    """
    norm = (frobenius(update, None) if norm is None else norm).to(prev_norm.dtype)
    if first:
        prev_norm.copy_(norm)
        return update
    limiter = torch.clamp(norm / (prev_norm + 1e-8), min=gamma) / gamma
    update.div_(_per_matrix(limiter).to(update.dtype))
    prev_norm.copy_(norm / limiter)
    return update


def fira_residual(grad: torch.Tensor, low: torch.Tensor, proj, side: str, alpha: float) -> torch.Tensor:
    """``G - α · project_back(R)`` as a new tensor (one ``(m, n)`` allocation, reference op order)."""
    sub = project_back(low, proj, side).mul_(alpha)
    return torch.sub(grad, sub, out=sub)


class FiraUpdate(UpdateRule):
    """Update rule ``'fira'``: GaLore's update plus the scaled, norm-limited residual."""

    name = "fira"
    shardable = True

    def validate(self, group: dict) -> None:
        if group["proj_type"] == "full":
            raise ValueError("residual 'fira' needs a one-sided projection; proj_type 'full' is not supported")

    def init_state(self, state: dict, param: torch.Tensor) -> None:
        state["scaling_grad"] = torch.zeros(param.shape[:-2], dtype=torch.float32, device=param.device)

    def update(self, item: ProjectedGrad, direction: torch.Tensor, scale: float) -> torch.Tensor:
        residual = fira_residual(item.grad, item.low, item.proj, item.side, scale)
        residual.mul_(channel_scaling(direction, item.low, item.side).to(residual.dtype))
        norm_growth_limit_(residual, item.state["scaling_grad"], first=item.step == 1,
                           norm=frobenius(residual, item.shard))
        update = project_back(direction, item.proj, item.side).mul_(scale)
        return update.add_(residual)


register_update(FiraUpdate())


class FiraAdamW(ProjectedAdamW):
    """Fira with AdamW; defaults as ``fira.FiraAdamW`` (lr 1e-3, eps 1e-6, no decay); scale key ``alpha``."""

    basis_rule = "svd"
    residual_rule = "fira"
    scale_key = "alpha"
    projected_defaults = {"update_proj_gap": 200, "alpha": 1.0, "proj_type": "std"}
