"""bitsandbytes' paged optimizers (`--paged`): their large state buffers live in CUDA unified
memory, outside PyTorch's caching allocator.

`bitsandbytes.optim.PagedAdamW` / `PagedAdamW8bit` (bitsandbytes 0.50,
bitsandbytes/optim/optimizer.py `Optimizer8bit.get_state_buffer`) allocate `state1` and
`state2` of a parameter with at least 100,000 elements through `F.get_paged` (`cudaMallocManaged`);
every smaller tensor, and the absmax and quantisation maps of the 8-bit states, are ordinary
tensors from the caching allocator. Paged memory is resident on the GPU while there is room
(nvidia-smi counts it) and is evicted to host memory under pressure instead of failing, so
memfit counts it in the device memory the run uses but not in `torch.cuda.max_memory_allocated`
or `max_memory_reserved`, and does not round it into the allocator's segments. On CPU
bitsandbytes falls back to ordinary tensors (with a warning): the bytes are the same.

The 32-bit `PagedAdamW` keeps fp32 moments whatever the parameters' dtype and counts its step
in a Python int; the 8-bit one is `AdamW8bit`'s layout.
"""
from __future__ import annotations

import math

from .dtypes import tensor_bytes

__all__ = ["PAGED_OPTIMIZERS", "PAGED_MIN_NUMEL", "paged_row_bytes", "paged_bytes", "step_temporaries"]

#: the optimizer id a method trains with (`Method.optimizer`) -> its paged bitsandbytes class
#: (`lowrank.OPTIMIZERS` ids)
PAGED_OPTIMIZERS = {"adamw": "paged-adamw", "adamw-8bit": "paged-adamw-8bit"}
#: bitsandbytes pages a state buffer only for parameters of at least this many elements
PAGED_MIN_NUMEL = 100_000


def _tensor(numel: int, eight_bit: bool) -> int:
    """state1 + state2 of one parameter, if paged."""
    if numel < PAGED_MIN_NUMEL:
        return 0
    return 2 * numel if eight_bit else 2 * tensor_bytes(numel, "fp32")


def paged_row_bytes(row, r) -> int:
    """Paged bytes of one instance of a planner row: its trained tensors' state buffers (an
    adapted matrix has two, lora_A and lora_B)."""
    if not r.spec.paged or not row.memory.optimizer_states or row.role == "shared":
        return 0
    eight = r.method.eight_bit
    if row.memory.adapters:
        from .models import Param
        from .rules import lora_pairs
        return sum(_tensor(n, eight) for n in lora_pairs(Param(row.name, row.shape, row.role), r))
    return _tensor(math.prod(row.shape), eight)


def paged_bytes(rows, r) -> int:
    """All paged state bytes of a step's rows."""
    return sum(row.count * paged_row_bytes(row, r) for row in rows)


def step_temporaries(r) -> int:
    """The step's temporaries: bitsandbytes' optimizers update every state in place
    (`planner.transients.in_place`); otherwise the method's own rule."""
    if r.spec.paged:
        from .transients import in_place
        return in_place(r)
    return r.method.temporaries(r)
