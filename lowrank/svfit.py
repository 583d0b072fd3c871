"""SVFit (Sun et al. 2024, "SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models
Using Singular Values", arXiv 2409.05926): train only the top-r singular values of each weight.

The paper (section III; no code was released) splits a pre-trained ``W (m, n)`` with its SVD
``W = U Σ Vᵀ`` into the best rank-r part and the rest::

    W = W_r + W_e,      W_r = U_r diag(σ_r) V_rᵀ,      W_e = W - W_r

and fine-tunes ``σ_r`` (r values) only; ``U_r (m, r)``, ``V_rᵀ (r, n)`` and ``W_e (m, n)`` are
frozen. memfit's :class:`SVFitLinear` computes the same map factored, never forming an ``(m, n)``
temporary::

    y = W_e x + U_r (σ_r ⊙ (V_rᵀ x)) + bias

so autograd saves one ``(…, r)`` tensor per layer (``V_rᵀ x``, for σ's gradient) besides the
input the model saves anyway. At initialisation ``W_e + W_r = W`` (up to the residual's rounding
in the weight dtype). ``W_e`` takes the original weight's dtype and the name ``weight``; the SVD
runs in fp32. ``σ_r`` is fp32 by default (as peft keeps adapters on a 16-bit base) and is cast to
the input's dtype in the forward. Train with ``torch.optim.AdamW``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["svd_split", "svfit_output", "SVFitLinear", "apply_svfit", "svfit_layers"]


def svd_split(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(U_r (m, r), σ_r (r,), V_rᵀ (r, n), W_e (m, n))`` in fp32 from ``torch.linalg.svd``.

    Each is its own storage (a slice would keep the whole decomposition alive)."""
    m, n = weight.shape
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"SVFit rank must be in [1, min(m, n)] = [1, {min(m, n)}] for a {m} x {n} weight, got {rank}")
    w = weight.detach().float()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    u, s, vh = u[:, :rank].clone(), s[:rank].clone(), vh[:rank].clone()
    return u, s, vh, w - (u * s) @ vh


def svfit_output(x: torch.Tensor, residual: torch.Tensor, u: torch.Tensor, singular_values: torch.Tensor,
                 vh: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``W_e x + U_r (σ_r ⊙ (V_rᵀ x)) + bias`` for inputs ``x (…, n)``."""
    z = F.linear(x, vh)                                                # (…, r)
    return F.linear(x, residual, bias) + F.linear(z * singular_values.to(z.dtype), u)


class SVFitLinear(nn.Module):
    """A linear layer whose only trainable parameters are its top-``rank`` singular values.

    Parameters: ``weight`` = ``W_e`` (frozen, the original dtype), ``bias`` (frozen, if any),
    ``svd_u`` ``(m, r)`` and ``svd_vh`` ``(r, n)`` (frozen, the original dtype) and
    ``singular_values`` ``(r,)`` (trainable, ``dtype``).
    """

    def __init__(self, linear: nn.Linear, rank: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features, self.rank = linear.in_features, linear.out_features, rank
        u, s, vh, residual = svd_split(linear.weight, rank)
        kind = linear.weight.dtype
        self.weight = nn.Parameter(residual.to(kind), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.svd_u = nn.Parameter(u.to(kind).contiguous(), requires_grad=False)
        self.svd_vh = nn.Parameter(vh.to(kind).contiguous(), requires_grad=False)
        self.singular_values = nn.Parameter(s.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return svfit_output(x, self.weight, self.svd_u, self.singular_values, self.svd_vh, self.bias)

    def merged_weight(self) -> torch.Tensor:
        """``W_e + U_r diag(σ_r) V_rᵀ`` in fp32 (the layer's effective weight)."""
        return self.weight.float() + (self.svd_u.float() * self.singular_values.detach().float()) @ self.svd_vh.float()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def apply_svfit(model: nn.Module, rank: int = 8, targets=None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Freeze ``model`` and replace its block linears (the LoRA targets) by :class:`SVFitLinear`.

    Returns the model (changed in place); only the singular values are trainable afterwards.
    """
    from .lora import block_linear_names
    from .replace import set_submodule, target_linears

    names = tuple(targets) if targets is not None else block_linear_names(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in target_linears(model, names):
        set_submodule(model, name, SVFitLinear(linear, rank, dtype))
    return model


def svfit_layers(model: nn.Module) -> list[tuple[str, SVFitLinear]]:
    """``(name, layer)`` of every :class:`SVFitLinear` in ``model``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SVFitLinear)]
