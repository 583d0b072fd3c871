"""DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv 2402.09353) via peft.

DoRA splits an adapted weight into a magnitude and a direction: with LoRA's ``W0 (m, n)``,
``A (r, n)``, ``B (m, r)`` and scaling ``s``,

    W' = m ⊙ (W0 + s B A) / ||W0 + s B A||_row           m (m,) trainable, init ||W0||_row

and, as the paper's section 4.3 suggests and peft does, the norm is treated as a constant in
backward (detached), so the layer computes::

    y = (m / ||W0 + s B A||_row) ⊙ (W0 x + s B A x) + bias

peft (``tuners/lora/dora.py``, ``DoraLinearLayer``; 0.21.2 read) stores ``m`` as
``lora_magnitude_vector[adapter].weight`` in the adapters' dtype (fp32 by default) and trains it
with A and B; everything else is LoRA (:func:`lowrank.lora.apply_lora` with ``use_dora=True``).
Train with ``torch.optim.AdamW``. :func:`dora_output` is the formula above as a pure function,
the reference the tests hold peft's layer to.
"""

from __future__ import annotations

import torch

__all__ = ["dora_weight_norm", "dora_output", "apply_dora", "dora_magnitudes"]


def dora_weight_norm(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """``||W0 + s B A||`` over each output row, ``(m,)``: the magnitude's initial value (B = 0
    gives ``||W0||_row``) and, detached, the denominator of every forward."""
    return torch.linalg.vector_norm(weight + scaling * (b @ a), dim=1)


def dora_output(x: torch.Tensor, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                magnitude: torch.Tensor, scaling: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``(m / ||W0 + s B A||_row) ⊙ (W0 x + s B A x) + bias`` with the norm detached."""
    norm = dora_weight_norm(weight, a.detach(), b.detach(), scaling).detach()
    out = (x @ weight.T + scaling * ((x @ a.T) @ b.T)) * (magnitude / norm)
    return out if bias is None else out + bias


def apply_dora(model, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets=None,
               use_rslora: bool = False, autocast_adapter_dtype: bool = True):
    """peft DoRA on ``model``'s block linears (the LoRA targets); returns the peft model.

    Trainable afterwards: ``lora_A``, ``lora_B`` and the magnitude vectors.
    """
    from .lora import apply_lora

    return apply_lora(model, rank, alpha, dropout, targets, use_rslora=use_rslora,
                      autocast_adapter_dtype=autocast_adapter_dtype, use_dora=True)


def dora_magnitudes(model, adapter: str = "default") -> list[tuple[str, torch.Tensor]]:
    """``(module name, magnitude (m,))`` of every DoRA layer of a peft model."""
    from peft.tuners.lora import LoraLayer

    found = [(name, module.lora_magnitude_vector[adapter].weight) for name, module in model.named_modules()
             if isinstance(module, LoraLayer) and adapter in module.lora_magnitude_vector]
    if not found:
        raise ValueError(f"model has no DoRA adapter {adapter!r}; build it with lowrank.dora.apply_dora")
    return found
