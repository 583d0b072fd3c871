"""APOLLO and APOLLO-Mini (Zhu et al., arXiv 2412.05270, MLSys 2025): Adam-estimated gradient scaling.

Follows pip apollo-torch 1.0.3 (``apollo_torch/apollo.py``, ``random_projector.py``); group keys
``rank``, ``update_proj_gap``, ``scale``, ``proj_type``, ``scale_type`` (``'channel'`` |
``'tensor'``), ``proj`` (``'random'`` | ``'svd'``; maps to the ``basis`` option). Per projected
``G (m, n)``::

    P = randn(seed) / sqrt(r)   (fp32, cast to G's dtype)    right (r, n) / left (m, r), 'std' side rule
    R = project(G, P) ; m, v <- Adam(R) ; N = m / denom
    c = ||N||_rank-axis / (||R||_rank-axis + 1e-8)   ('channel': per row/column of G)
      = ||N||_F / (||R||_F + 1e-8)                    ('tensor')
    U = limit(G · c)                                   # Fira's norm-growth limiter, γ = 1.01
    W <- W - s · sqrt(scale) · U                       # no projection back: the raw gradient is rescaled

The random projection is *regenerated* from the stored ``seed`` every step (the reference code
keeps the matrix; the paper says no projection needs storing, and the storage contract follows
the paper). Seeds start at the parameter's 1-based position in the optimizer (as the reference)
and advance with :func:`next_seed` at every refresh (steps 0, T, 2T, ...; the first refresh
uses the initial seed). ``scale_front`` / ``disable_nl`` of the reference are not offered:
memfit always limits, then scales.

APOLLO-Mini = rank 1, ``scale_type='tensor'``, ``scale=128`` (README recommendation).
State per projected matrix: ``step``, ``exp_avg``, ``exp_avg_sq`` (shape of ``R``), ``seed``
(0-d int64), ``scaling_grad`` (0-d float32). A fused expert tensor ``(E, m, n)``: one seed draws
the E experts' projections ``(E, r, n)`` at once; moments ``(E, ...)``, limiter ``(E,)``.
"""

from __future__ import annotations

import math

import torch

from .fira import channel_scaling, norm_growth_limit_, tensor_scaling
from .projected_adamw import BasisRule, ProjectedAdamW, ProjectedGrad, UpdateRule, register_basis, register_update
from .sharded import frobenius, own_rows, row_shard

__all__ = [
    "SCALE_TYPES",
    "next_seed",
    "random_projection",
    "RandomBasis",
    "APOLLOUpdate",
    "APOLLOAdamW",
    "APOLLOMiniAdamW",
]

SCALE_TYPES = ("channel", "tensor")
_MASK63 = (1 << 63) - 1


def next_seed(seed: int) -> int:
    """Deterministic seed sequence (one SplitMix64 round, kept in [0, 2^63)).

    >>> next_seed(1) != next_seed(2)
    True
    """
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & _MASK63


def random_projection(seed: int, shape: tuple[int, ...], rank: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Gaussian ``randn(shape) / sqrt(rank)`` from ``seed`` (fp32 on ``device``, then cast)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) / math.sqrt(rank)).to(dtype)


class RandomBasis(BasisRule):
    """Basis rule ``'random'``: state ``seed`` (0-d int64); the matrix is regenerated each step."""

    name = "random"
    state_key = "seed"
    sides = ("left", "right")
    shardable = True        # every rank regenerates the whole basis from the seed; left keeps its rows

    def refresh(self, opt, param, grad, state, group, side):
        if "seed" not in state:
            state["seed"] = torch.tensor(opt.param_index(param) + 1, dtype=torch.int64)
        elif int(state["step"].item()) > 0:
            state["seed"].fill_(next_seed(int(state["seed"].item())))
        return None

    def matrices(self, opt, param, state, group, grad, side):
        *batch, m, n = grad.shape                  # the whole matrix's shape (also for a DTensor)
        shape = (*batch, group["rank"], n) if side == "right" else (*batch, m, group["rank"])
        proj = random_projection(int(state["seed"].item()), shape, group["rank"],
                                 group["proj_dtype"] or grad.dtype, grad.device)
        return own_rows(proj, row_shard(param)) if side == "left" else proj


class APOLLOUpdate(UpdateRule):
    """Update rule ``'apollo'``: the raw gradient scaled channel- or tensor-wise, then limited."""

    name = "apollo"
    shardable = True

    def validate(self, group: dict) -> None:
        if group.get("scale_type", "channel") not in SCALE_TYPES:
            raise ValueError(f"unknown scale_type {group['scale_type']!r}; expected 'channel' or 'tensor'")
        if group["proj_type"] == "full":
            raise ValueError("residual 'apollo' needs a one-sided projection; proj_type 'full' is not supported")

    def init_state(self, state: dict, param: torch.Tensor) -> None:
        state["scaling_grad"] = torch.zeros(param.shape[:-2], dtype=torch.float32, device=param.device)

    def update(self, item: ProjectedGrad, direction: torch.Tensor, scale: float) -> torch.Tensor:
        if item.group.get("scale_type", "channel") == "tensor":   # left: R is whole on every rank
            factor = tensor_scaling(direction, item.low, item.shard, whole=item.side == "left")
        else:
            factor = channel_scaling(direction, item.low, item.side)
        update = item.grad * factor.to(item.grad.dtype)
        norm_growth_limit_(update, item.state["scaling_grad"], first=item.step == 1,
                           norm=frobenius(update, item.shard))
        return update.mul_(math.sqrt(scale))


register_basis(RandomBasis())
register_update(APOLLOUpdate())


class APOLLOAdamW(ProjectedAdamW):
    """APOLLO (channel-wise scaling, random projection); defaults as apollo-torch's ``APOLLOAdamW``."""

    basis_rule = "random"
    residual_rule = "apollo"
    projected_defaults = {"update_proj_gap": 200, "scale": 1.0, "proj_type": "std", "scale_type": "channel"}

    def add_param_group(self, param_group: dict) -> None:
        proj = param_group.pop("proj", None)
        if proj is not None:
            if proj not in ("random", "svd"):
                raise ValueError(f"unknown proj {proj!r}; expected 'random' or 'svd'")
            param_group.setdefault("basis", proj)
        super().add_param_group(param_group)


class APOLLOMiniAdamW(APOLLOAdamW):
    """APOLLO-Mini: give projected groups ``rank=1``; defaults ``scale=128``, ``scale_type='tensor'``."""

    projected_defaults = {"update_proj_gap": 200, "scale": 128.0, "proj_type": "std", "scale_type": "tensor"}
