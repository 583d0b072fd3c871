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

__all__ = [
    "solve_sylvester_sym",
    "gram_inverses",
    "lora_pro_project",
    "equivalent_gradient",
    "lora_pro_adjust",
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
    a32, b32 = a.float(), b.float()
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
