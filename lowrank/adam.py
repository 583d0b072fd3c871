"""Adam moment update and direction as pure (foreach) tensor functions, two conventions.

With gradient ``g``, moments ``m``, ``v``, step ``t`` (after increment), ``bc1 = 1 - β1^t``,
``bc2 = 1 - β2^t``::

    m <- β1 m + (1 - β1) g                       (torch: m.lerp_(g, 1 - β1), same value)
    v <- β2 v + (1 - β2) g²

``adam_style='torch'`` (= ``torch.optim.AdamW``; bitsandbytes' 8-bit Adam is the same math)::

    W <- W (1 - lr λ)                            # decoupled decay *before* the step
    W <- W - (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + ε)

``adam_style='hf'`` (transformers' old ``AdamW``, copied into GaLore, Fira, APOLLO, GradNormLoRP)::

    W <- W - lr sqrt(bc2) / bc1 · m / (sqrt(v) + ε)          # ε on the *uncorrected* root
    W <- W - lr λ W                                           # decay *after* the step, plain lr

The two differ only through ε (hf's ε is effectively ε / sqrt(bc2), larger early on) and the
O(lr² λ) ordering of the decay. memfit's projected optimizers default to ``'hf'``: the methods'
published hyperparameters (lr 0.01, α 0.25, ε 1e-6) were tuned with it and the drop-in classes
then reproduce the reference packages step for step. ``'torch'`` is a group option.

``correct_bias=False`` (hf only, as transformers) drops the bias correction from the step size.
Every function takes lists so one call covers many tensors (``torch._foreach_*``); on CPU these
are the same per-tensor kernels, and the op order is the reference code's, so results are
bit-identical to it. (That matters beyond tidiness: a 1e-6 difference in a gradient can flip the
sign of a singular vector at a GaLore refresh, and since the moments survive refreshes the runs
then part ways.)
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "ADAM_STYLES",
    "check_adam_style",
    "check_adam_group",
    "check_adam_hyperparameters",
    "adam_step_size",
    "adam_moments_",
    "adam_denoms",
    "adam_directions",
    "decay_before_",
    "decay_after_",
    "add_scaled_",
    "adamw_step_",
]

ADAM_STYLES = ("hf", "torch")


def check_adam_style(style) -> None:
    """Raise ``ValueError`` unless ``style`` is ``'hf'`` or ``'torch'``."""
    if style not in ADAM_STYLES:
        raise ValueError(f"unknown adam_style {style!r}; expected 'hf' or 'torch'")


def check_adam_group(group: dict) -> None:
    """Raise ``ValueError`` naming the value for a bad ``lr``, ``betas``, ``eps``, ``weight_decay``,
    ``adam_style`` or ``optim_bits`` of a param group."""
    check_adam_hyperparameters(group)
    if group["optim_bits"] not in (8, 32):
        raise ValueError(f"optim_bits must be 8 or 32, got {group['optim_bits']!r}")


def check_adam_hyperparameters(group: dict) -> None:
    """Raise ``ValueError`` naming the value for a bad ``lr``, ``betas``, ``eps``, ``weight_decay``
    or ``adam_style`` of a param group."""
    if not group["lr"] >= 0:
        raise ValueError(f"lr must be >= 0, got {group['lr']!r}")
    for i, beta in enumerate(group["betas"]):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas[{i}] must be in [0, 1), got {beta!r}")
    if not group["eps"] >= 0:
        raise ValueError(f"eps must be >= 0, got {group['eps']!r}")
    if not group["weight_decay"] >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {group['weight_decay']!r}")
    check_adam_style(group["adam_style"])


def adam_step_size(lr: float, beta1: float, beta2: float, step: float, style: str, correct_bias: bool = True) -> float:
    """Scalar multiplying the direction of :func:`adam_directions`.

    >>> adam_step_size(1.0, 0.9, 0.999, 1, "torch"), round(adam_step_size(1.0, 0.9, 0.999, 1, "hf"), 6)
    (10.000000000000002, 0.316228)
    """
    bc1 = 1 - beta1**step
    if style == "torch":
        return lr / bc1
    if not correct_bias:
        return lr
    return lr * math.sqrt(1 - beta2**step) / bc1


def adam_moments_(exp_avgs: list, exp_avg_sqs: list, grads: list, beta1: float, beta2: float, style: str) -> None:
    """Update both moments in place; grads are cast to the moments' dtype where they differ."""
    grads = [g if g.dtype == m.dtype else g.to(m.dtype) for g, m in zip(grads, exp_avgs)]
    if style == "torch":
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    else:
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)


def adam_denoms(exp_avg_sqs: list, steps: list, beta2: float, eps: float, style: str) -> list:
    """``sqrt(v) / sqrt(bc2) + ε`` (torch) or ``sqrt(v) + ε`` (hf), new tensors."""
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    if style == "torch":
        torch._foreach_div_(denoms, [(1 - beta2**t) ** 0.5 for t in steps])
    torch._foreach_add_(denoms, eps)
    return denoms


def adam_directions(exp_avgs: list, denoms: list) -> list:
    """Normalised direction ``N = m / denom`` (multiplied by :func:`adam_step_size` in the step).

    Written into ``denoms`` (which are returned): no new tensors. On CPU, where every allocation
    of a large tensor costs page faults, that is measurably faster; on other devices one
    ``torch._foreach_div`` launch beats a loop of kernels. Same values either way.
    """
    if not denoms or denoms[0].device.type != "cpu":
        return torch._foreach_div(exp_avgs, denoms)
    for m, d in zip(exp_avgs, denoms):
        torch.div(m, d, out=d)
    return denoms


def decay_before_(params: list, lr: float, weight_decay: float, style: str) -> None:
    """torch convention: ``W *= 1 - lr λ`` before the step (no-op for hf or λ = 0)."""
    if style == "torch" and weight_decay != 0 and params:
        torch._foreach_mul_(params, 1 - lr * weight_decay)


def decay_after_(params: list, lr: float, weight_decay: float, style: str) -> None:
    """hf convention: ``W -= lr λ W`` after the step (no-op for torch or λ <= 0)."""
    if style == "hf" and weight_decay > 0 and params:
        torch._foreach_add_(params, params, alpha=-lr * weight_decay)


def add_scaled_(params: list, tensors: list, scalars: list) -> None:
    """``p.add_(t, alpha=s)`` for each triple, one foreach call when all ``s`` are equal."""
    if len(set(scalars)) == 1:
        torch._foreach_add_(params, tensors, alpha=scalars[0])
    else:
        for p, t, s in zip(params, tensors, scalars):
            p.add_(t, alpha=s)


def adamw_step_(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, betas, eps, weight_decay, style,
                correct_bias=True) -> None:
    """One full-rank AdamW step on lists of tensors (``steps`` already incremented, as floats).

    Op for op the reference code, so results are bit-identical on CPU: ``style='torch'`` is
    ``torch.optim.AdamW``'s single-tensor algorithm (``addcdiv_``), ``'hf'`` transformers' AdamW
    (``p.add_(m / denom, alpha=-step_size)``).
    """
    beta1, beta2 = betas
    decay_before_(params, lr, weight_decay, style)
    adam_moments_(exp_avgs, exp_avg_sqs, grads, beta1, beta2, style)
    denoms = adam_denoms(exp_avg_sqs, steps, beta2, eps, style)
    sizes = [-adam_step_size(lr, beta1, beta2, t, style, correct_bias) for t in steps]
    if style == "torch" and all(m.dtype == p.dtype for m, p in zip(exp_avgs, params)):
        torch._foreach_addcdiv_(params, exp_avgs, denoms, sizes)
    else:
        add_scaled_(params, adam_directions(exp_avgs, denoms), sizes)
    decay_after_(params, lr, weight_decay, style)
