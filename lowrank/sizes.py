"""Bytes that tensors hold, each storage counted once (views and tied weights share one).

Every byte count in lowrank (optimizer state, a quantised base, a method's trainable and frozen
parameters) goes through :func:`storage_bytes`, so they agree on what "held" means: the
``untyped_storage().nbytes()`` of each distinct ``(device, data_ptr)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["storage_bytes", "parameter_bytes"]


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Sum of ``nbytes`` over the distinct storages behind ``tensors``.

    >>> w = torch.zeros(4, 4)
    >>> storage_bytes([w, w.T, w[0]])
    64
    """
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        key = (t.device, storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def parameter_bytes(model: torch.nn.Module, trainable: bool | None = None) -> int:
    """Bytes of ``model``'s parameters: all (``None``), the trainable or the frozen ones."""
    return storage_bytes(p for p in model.parameters() if trainable is None or p.requires_grad == trainable)
