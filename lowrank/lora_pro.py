"""LoRA-Pro: LoRA gradients adjusted so the low-rank step approximates full fine-tuning's.

Source: mrflogs/LoRA-Pro ``DeepSpeed-0.15.1/deepspeed/runtime/zero/stage_1_and_2.py``
(``lorapro_full_adjustment``, ``solve_sylvester``); paper arXiv 2407.18242 (ICLR 2025).

With ``W = W0 + s B A`` (``A (r, n)``, ``B (m, r)``, LoRA scaling ``s``), a step ``(gA, gB)`` moves
``W`` by ``s (B gA + gB A)`` to first order, the *equivalent gradient*. Given a target ``g (m, n)``
and ``P_B = B (BᵀB)⁻¹ Bᵀ``, the minimisers of ``|| s (B gA + gB A) - g ||_F`` are::

    gA = (1/s²) (BᵀB)⁻¹ (s Bᵀ g) + X A
    gB = (1/s²) (I - P_B) (s g Aᵀ) (AAᵀ)⁻¹ - B X            # any r x r X gives the same s(B gA + gB A)

and the X closest to plain LoRA's gradients ``(s Bᵀ g, s g Aᵀ)`` solves the Sylvester equation
``BᵀB X + X AAᵀ = -(1/s²) (BᵀB)⁻¹ (s Bᵀ g) Aᵀ``. One optimizer step, per (A, B) pair:

1. ``(gA, gB)`` = the minimisers above for the raw LoRA gradients with ``X = 0``;
   ``g_eq = s (B gA + gB A)`` (= ``P_B G + (I - P_B) G P_A``, the reachable part of ``G``);
2. Adam moments on ``g_eq`` (full ``(m, n)``), Adam direction ``u`` (torch convention, as the
   reference: ``m̂ / (sqrt(v̂) + eps)``);
3. ``(gA, gB)`` = the minimisers for ``u`` including the Sylvester ``X``;
4. ``A -= lr gA``, ``B -= lr gB`` (the reference hands them to SGD); decoupled weight decay first.

At a pair's first step ``B = 0`` (peft init) so ``BᵀB`` is singular; as in the reference,
``gA`` is then the raw gradient and ``gB = (1/s²) (s g Aᵀ) (AAᵀ)⁻¹``, with no ``X``.
The inverses are ``pinv(AAᵀ + δI)``, ``pinv(BᵀB + δI)`` with ``δ = 1e-8``, in fp32.
"""

from __future__ import annotations

import torch

from .adam import (adam_denoms, adam_directions, adam_moments_, adam_step_size, adamw_step_,
                   check_adam_hyperparameters, decay_after_, decay_before_)
from .projection import check_positive

__all__ = [
    "solve_sylvester_sym",
    "gram_inverses",
    "lora_pro_project",
    "equivalent_gradient",
    "lora_pro_adjust",
    "LoRAProAdamW",
]


def solve_sylvester_sym(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Solve ``a X + X b = c`` for symmetric positive semi-definite ``a (r, r)``, ``b (k, k)``, in fp32.

    Both coefficient matrices in LoRA-Pro are Gram matrices (``BᵀB``, ``AAᵀ``), so their Schur
    forms are eigendecompositions with orthogonal eigenvectors: ``a = U diag(λ) Uᵀ``,
    ``b = V diag(μ) Vᵀ`` (``eigh``), and with ``F = Uᵀ c V``::

        X = U (F / (λ_i + μ_j)) Vᵀ

    This is Bartels–Stewart for the symmetric case: O(r³), real arithmetic, no inverse of an
    eigenvector matrix. The reference instead calls the general complex ``eig`` and
    ``solve(U, ...)``/``inv(V)``, which loses accuracy when the eigenvector matrices are
    ill-conditioned (and the Kronecker solve costs O(r⁶)). Where ``λ_i + μ_j`` is zero to
    working precision the component is set to 0: the minimum-norm least-squares solution.
    """
    a32, b32, c32 = a.float(), b.float(), c.float()
    lam, u = torch.linalg.eigh(a32)
    mu, v = torch.linalg.eigh(b32)
    denom = lam[:, None] + mu[None, :]                                 # (r, k)
    tol = denom.abs().max().clamp_min(1e-30) * max(denom.shape) * torch.finfo(torch.float32).eps
    f = u.T @ c32 @ v
    y = torch.where(denom.abs() > tol, f / denom, torch.zeros_like(f))
    return u @ y @ v.T


def gram_inverses(a: torch.Tensor, b: torch.Tensor, delta: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pinv(AAᵀ + δI), pinv(BᵀB + δI))`` in fp32, both ``(r, r)``."""
    a32, b32 = a.float(), b.float()
    eye = torch.eye(a32.shape[0], device=a32.device)
    return torch.linalg.pinv(a32 @ a32.T + delta * eye), torch.linalg.pinv(b32.T @ b32 + delta * eye)


def lora_pro_project(
    a: torch.Tensor,
    b: torch.Tensor,
    grad_a: torch.Tensor,
    grad_b: torch.Tensor,
    scaling: float,
    aat_inv: torch.Tensor,
    btb_inv: torch.Tensor,
    first: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ``(gA, gB)`` with ``X = 0`` from LoRA gradients ``grad_a = s Bᵀ g``, ``grad_b = s g Aᵀ``.

    All fp32. ``(I - P_B) grad_b`` is formed as ``grad_b - B ((BᵀB)⁻¹ (Bᵀ grad_b))``, never the
    ``(m, m)`` projector the reference builds.
    """
    b32 = b.float()
    inv_s2 = 1.0 / scaling**2
    if first:
        return grad_a.float(), inv_s2 * (grad_b.float() @ aat_inv)
    gb_perp = grad_b.float() - b32 @ (btb_inv @ (b32.T @ grad_b.float()))
    return inv_s2 * (btb_inv @ grad_a.float()), inv_s2 * (gb_perp @ aat_inv)


def equivalent_gradient(
    a: torch.Tensor, b: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor, scaling: float, dtype: torch.dtype
) -> torch.Tensor:
    """``s (B gA + gB A)``, ``(m, n)``, computed in ``dtype`` (the moments' dtype)."""
    out = b.to(dtype) @ ga.to(dtype)
    return out.addmm_(gb.to(dtype), a.to(dtype)).mul_(scaling)


def lora_pro_adjust(
    a: torch.Tensor,
    b: torch.Tensor,
    g: torch.Tensor,
    scaling: float,
    aat_inv: torch.Tensor,
    btb_inv: torch.Tensor,
    first: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gA, gB)`` (fp32) minimising ``|| s (B gA + gB A) - g ||_F``, nearest to plain LoRA's.

    ``g (m, n)`` is the full-size target (the Adam direction). Plain LoRA's gradients for it are
    ``s Bᵀ g`` and ``s g Aᵀ``; the Sylvester term ``X`` picks, among all minimisers, the one
    closest to them (skipped at the first step, where ``B = 0``).
    """
    grad_a = scaling * (b.to(g.dtype).T @ g).float()                   # (r, n)
    grad_b = scaling * (g @ a.to(g.dtype).T).float()                   # (m, r)
    ga, gb = lora_pro_project(a, b, grad_a, grad_b, scaling, aat_inv, btb_inv, first)
    if first:
        return ga, gb
    a32, b32 = a.float(), b.float()
    x = solve_sylvester_sym(b32.T @ b32, a32 @ a32.T, -(ga @ a32.T))  # (r, r)
    return ga + x @ a32, gb - b32 @ x


def _check_group(group: dict) -> None:
    check_adam_hyperparameters(group)
    if not group["delta"] >= 0:
        raise ValueError(f"delta must be >= 0, got {group['delta']!r}")
    if group["scaling"] is not None:
        check_positive("scaling", group["scaling"])
        _check_pairs(group["params"])


def _check_pairs(params: list) -> None:
    """``params`` must alternate ``lora_A (r, n)``, ``lora_B (m, r)`` with matching ``r``."""
    if len(params) % 2:
        raise ValueError(f"LoRA-Pro groups alternate lora_A, lora_B; got an odd count {len(params)}")
    for a, b in zip(params[::2], params[1::2]):
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"not a (lora_A (r, n), lora_B (m, r)) pair: shapes {tuple(a.shape)}, {tuple(b.shape)}")


class LoRAProAdamW(torch.optim.Optimizer):
    """LoRA-Pro: Adam on the equivalent full gradient, applied through optimal ``(gA, gB)``.

    A group with ``scaling`` (the LoRA scale ``s``: ``lora_alpha / r``, or ``/ sqrt(r)`` for
    rsLoRA) holds ``params = [A1, B1, A2, B2, ...]`` (see :func:`lowrank.lora.lora_pro_param_groups`);
    a group without it (``scaling=None``) is plain AdamW (e.g. a classifier head). Options: ``lr``,
    ``betas`` (0.9, 0.999), ``eps`` (1e-8), ``weight_decay`` (0; decoupled, on A and B),
    ``delta`` (1e-8, the ridge in the Gram inverses), ``adam_style`` ('torch', as the reference),
    ``state_dtype`` (moments' dtype, default A's). Defaults follow the reference code.

    State: per pair, on ``lora_A``: ``step``, ``exp_avg``, ``exp_avg_sq`` ``(m, n)``; ``lora_B``
    holds nothing. Plain parameters: ``step``, ``exp_avg``, ``exp_avg_sq`` like the parameter.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, scaling: float | None = None, delta: float = 1e-8,
                 adam_style: str = "torch", state_dtype: torch.dtype | None = None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, scaling=scaling,
                        delta=delta, adam_style=adam_style, state_dtype=state_dtype, correct_bias=True)
        super().__init__(params, defaults)
        if all(g["scaling"] is None for g in self.param_groups):
            raise ValueError("LoRA-Pro needs a param group of (lora_A, lora_B) pairs with its LoRA 'scaling' "
                             "(got scaling=None everywhere); build them with lowrank.lora.lora_pro_param_groups(model)")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        _check_group(self.param_groups[-1])

    def load_state_dict(self, state_dict: dict) -> None:
        """As ``torch.optim.Optimizer``'s, but moments keep their saved dtype (``state_dtype``)."""
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params):
            for key, value in state_dict["state"].get(pid, {}).items():
                if torch.is_tensor(value) and key != "step":
                    self.state[p][key] = value.to(device=p.device)

    def _init_state(self, param: torch.Tensor, shape, group: dict) -> dict:
        state = self.state[param]
        if "step" not in state:
            dtype = group["state_dtype"] or param.dtype
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros(shape, dtype=dtype, device=param.device)
            state["exp_avg_sq"] = torch.zeros(shape, dtype=dtype, device=param.device)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["scaling"] is None:
                self._plain_step(group, [p for p in group["params"] if p.grad is not None])
                continue
            for a, b in zip(group["params"][::2], group["params"][1::2]):
                if a.grad is not None and b.grad is not None:
                    self._pair_step(group, a, b)
        return loss

    def _plain_step(self, group: dict, params: list) -> None:
        states = [self._init_state(p, p.shape, group) for p in params]
        for s in states:
            s["step"] += 1
        adamw_step_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states], [s["step"].item() for s in states],
                    lr=group["lr"], betas=group["betas"], eps=group["eps"],
                    weight_decay=group["weight_decay"], style=group["adam_style"])

    def _pair_step(self, group: dict, a: torch.Tensor, b: torch.Tensor) -> None:
        """Steps 1-4 of the module docstring for one (A, B) pair."""
        s, (beta1, beta2), style, lr = group["scaling"], group["betas"], group["adam_style"], group["lr"]
        state = self._init_state(a, (b.shape[0], a.shape[1]), group)
        first = state["step"].item() == 0
        aat_inv, btb_inv = gram_inverses(a, b, group["delta"])
        ga, gb = lora_pro_project(a, b, a.grad, b.grad, s, aat_inv, btb_inv, first)
        g_eq = equivalent_gradient(a, b, ga, gb, s, state["exp_avg"].dtype)       # (m, n)
        state["step"] += 1
        t = state["step"].item()
        adam_moments_([state["exp_avg"]], [state["exp_avg_sq"]], [g_eq], beta1, beta2, style)
        del g_eq
        denom = adam_denoms([state["exp_avg_sq"]], [t], beta2, group["eps"], style)
        direction = adam_directions([state["exp_avg"]], denom)[0]
        del denom
        ga, gb = lora_pro_adjust(a, b, direction, s, aat_inv, btb_inv, first)
        decay_before_([a, b], lr, group["weight_decay"], style)
        size = adam_step_size(lr, beta1, beta2, t, style, group["correct_bias"])
        a.add_(ga.to(a.dtype), alpha=-size)
        b.add_(gb.to(b.dtype), alpha=-size)
        decay_after_([a, b], lr, group["weight_decay"], style)
