"""GradNormLoRP: weight normalisation ``W = g · v / ||v||`` with a GaLore-projected direction update.

Source: Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training
(commit 66c8e76) ``GradNormLoRP/LowRankWeightNormAdamW.py``; paper arXiv 2412.19616 (AAAI 2025).

**The reference step** keeps, per weight ``W (m, n)``, a full copy ``v`` and row norms ``g (m, 1)``
(``||·||`` is the row norm)::

    g <- ||v||                                     # reset every step
    W <- g · v / ||v||                             # = v
    grad_v = G · g / ||v||                         # = G, since g = ||v||
    grad_g = Σ_row G · v / ||v||
    v <- v - s · α · P N(P-projected grad_v) ; g <- g - s · N(grad_g)     # Adam, shared step t
    v <- v - lr λ v ; g <- g - lr λ g             # hf-style decay
    W <- g · v / ||v||

**Without the copy of v.** After a step ``W = g' v' / ||v'||`` row by row, so
``v' = W · ||v'|| / g'``: storing the per-row ratio ``row_scale = ||v'|| / g'`` (``m`` floats)
recovers ``v`` exactly from ``W``. And because ``g`` is reset to ``||v||`` before it is read, the
previous ``g`` is never needed: the next step starts from ``v = W · row_scale``, ``g = ||v||``, so
``grad_v = G`` and ``grad_g = Σ_row G · v / ||v||``. At the first step ``v = W``
(``row_scale = 1``), as the reference's ``v = W.clone()``. So memfit's step is::

    W <- W · row_scale                             # W now holds v; ||v|| and grad_g from it
    GaLore step on W with gradient G               # the shared ProjectedAdamW skeleton (+ decay)
    g' = ||v|| - s · N(grad_g) (+ the same decay) ; row_scale <- ||v'|| / g' ; W <- v' / row_scale

It equals the reference to rounding (a test checks 1e-5 over 10+ fp32 steps) and saves ``m · n``
elements per projected weight (the reference's ``v``) at the cost of ``m`` fp32 (``row_scale``).

Scope (``docs/storage-contract.md``): only the projected weights are weight-normalised (a fused
expert tensor ``(E, m, n)`` row by row of every expert: ``row_scale`` and the magnitude moments
``(E, m)``); other parameters get the skeleton's plain AdamW (the reference normalises every
parameter).
"""

from __future__ import annotations

import torch

from .adam import adam_denoms, adam_directions, adam_moments_, adam_step_size, decay_after_, decay_before_
from .projected_adamw import ProjectedAdamW
from .quant8 import MOMENT_KEYS, init_moments, read_moments, write_moments_

__all__ = ["recover_direction_", "magnitude_grad", "renormalize_", "GradNormLoRP", "GradNormLoRP8bit"]

_SUFFIX = "_g"  # magnitude moments: exp_avg_g, exp_avg_sq_g (+ _absmax when 8-bit)


def recover_direction_(weight: torch.Tensor, row_scale: torch.Tensor) -> torch.Tensor:
    """``v = W · row_scale`` in place; returns ``||v||`` per row, fp32 ``(..., m)``."""
    weight.mul_(row_scale.to(weight.dtype).unsqueeze(-1))
    return torch.linalg.vector_norm(weight.float(), dim=-1)


def magnitude_grad(grad: torch.Tensor, v: torch.Tensor, norm_v: torch.Tensor) -> torch.Tensor:
    """``∂L/∂g = Σ_row G · v / ||v||``, fp32 ``(..., m)`` (a row-wise dot product, no (m, n)
    temporary)."""
    return torch.linalg.vecdot(grad.float(), v.float(), dim=-1) / norm_v


def renormalize_(weight: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``W <- g · v / ||v||`` in place (``weight`` holds ``v``); returns ``row_scale = ||v|| / g``."""
    norm = torch.linalg.vector_norm(weight.float(), dim=-1)
    weight.mul_((g / norm).to(weight.dtype).unsqueeze(-1))
    return norm / g


def _magnitude_key(key: str) -> str:
    """quant8's moment key -> the magnitude's: exp_avg -> exp_avg_g, exp_avg_absmax -> exp_avg_g_absmax."""
    base, absmax = (key[: -len("_absmax")], "_absmax") if key.endswith("_absmax") else (key, "")
    return base + _SUFFIX + absmax


def _magnitude_view(state: dict) -> dict:
    """The magnitude moments under quant8's key names (the same tensor objects)."""
    keys = [k + tail for k, _ in MOMENT_KEYS for tail in ("", "_absmax")]
    return {k: state[_magnitude_key(k)] for k in keys if _magnitude_key(k) in state}


def _init_magnitude(state: dict, param: torch.Tensor, group: dict) -> None:
    """Zero magnitude moments ``(..., m)`` (8-bit rule when ``optim_bits == 8``) and
    ``row_scale = 1``."""
    view: dict = {}
    init_moments(view, tuple(param.shape[:-1]), param.device, group["state_dtype"] or param.dtype,
                 group["optim_bits"] == 8)
    state.update({_magnitude_key(k): v for k, v in view.items()})
    state["row_scale"] = torch.ones(param.shape[:-1], dtype=torch.float32, device=param.device)


class GradNormLoRP(ProjectedAdamW):
    """GradNormLoRP with AdamW; defaults as ``LowRankWeightNormAdamW`` (lr 1e-3, eps 1e-6, no decay).

    Group keys as GaLore (``rank``, ``update_proj_gap``, ``scale``, ``proj_type``). State per
    projected weight: GaLore's, plus ``exp_avg_g``, ``exp_avg_sq_g`` ``(m,)`` and ``row_scale``
    ``(m,)`` fp32.
    """

    basis_rule = "svd"
    residual_rule = "none"

    def _projected_update(self, group: dict, params: list) -> None:
        norms, grads_g = [], []
        for p in params:
            state = self.state[p]
            if "row_scale" not in state:
                _init_magnitude(state, p, group)
            norm_v = recover_direction_(p, state["row_scale"])
            norms.append(norm_v)
            grads_g.append(magnitude_grad(p.grad, p, norm_v))
        super()._projected_update(group, params)                        # v <- GaLore step on v
        for p, norm_v, grad_g in zip(params, norms, grads_g):
            state = self.state[p]
            g = self._magnitude_step(group, state, norm_v, grad_g)
            state["row_scale"].copy_(renormalize_(p, g))

    @staticmethod
    def _magnitude_step(group: dict, state: dict, g: torch.Tensor, grad_g: torch.Tensor) -> torch.Tensor:
        """Adam on ``g`` (fp32 ``(m,)``, starting from ``||v||``) at the step the skeleton just took."""
        (beta1, beta2), style, lr, t = group["betas"], group["adam_style"], group["lr"], state["step"].item()
        view = _magnitude_view(state)
        m, v = read_moments(view)
        adam_moments_([m], [v], [grad_g], beta1, beta2, style)
        direction = adam_directions([m], adam_denoms([v], [t], beta2, group["eps"], style))[0]
        write_moments_(view, m, v)
        decay_before_([g], lr, group["weight_decay"], style)
        g.add_(direction.float(), alpha=-adam_step_size(lr, beta1, beta2, t, style, group["correct_bias"]))
        decay_after_([g], lr, group["weight_decay"], style)
        return g


class GradNormLoRP8bit(GradNormLoRP):
    """GradNormLoRP with block-wise 8-bit moments (direction and magnitude; < 4096 elements fp32).

    Defaults as the authors' 8-bit classes (lr 1e-3, eps 1e-8, weight_decay 1e-2).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, **kwargs):
        kwargs.setdefault("optim_bits", 8)
        super().__init__(params, lr, betas, eps, weight_decay, **kwargs)
