"""Activation offloading in a burst: torchtune's policy, memfit's own saved-tensors hook.

torchtune's `OffloadActivations` (torchtune/training/_activation_offloading.py, 0.6.1) needs
CUDA streams and cannot run on CPU; transformers 5.24's `activation_checkpointing_enable(
offload=True)` runs there but only copies each checkpoint's inputs from host memory to host
memory, so it changes nothing a CPU burst can see. This hook applies torchtune's policy (every
tensor saved in the body's forward, of at least `planner.offload.MIN_OFFLOAD_BYTES` and not a
parameter, copied to a host tensor once per saved occurrence and brought back when backward
unpacks it; no streams, so nothing is stashed) on any device, and counts the host copies alive:
on CPU they are the same memory as the rest, so the burst reports them apart (`host_bytes`).
"""
from __future__ import annotations

import itertools

import torch
from torch.autograd.graph import saved_tensors_hooks

__all__ = ["Offloader"]


class Offloader(saved_tensors_hooks):
    """Saved tensors to host copies in the forward, back to their device in backward."""

    def __init__(self, min_bytes: int | None = None) -> None:
        from planner.offload import MIN_OFFLOAD_BYTES
        self.min_bytes = MIN_OFFLOAD_BYTES if min_bytes is None else min_bytes
        self.host: dict[int, tuple[torch.Tensor, torch.device]] = {}
        self._ids = itertools.count()
        super().__init__(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor):
        if isinstance(t, torch.nn.Parameter) or t.numel() * t.element_size() < self.min_bytes:
            return t
        copy = torch.empty_like(t, device="cpu", pin_memory=t.is_cuda)
        copy.copy_(t)
        key = next(self._ids)
        self.host[key] = (copy, t.device)
        return key

    def _unpack(self, packed):
        if not isinstance(packed, int):
            return packed
        copy, device = self.host.pop(packed)
        return copy.to(device)

    def host_bytes(self) -> int:
        """Bytes of the host copies still waiting for their backward."""
        return sum(t.untyped_storage().nbytes() for t, _ in self.host.values())
