"""ZeRO-3's gathered parameters: the whole (all-gathered) parameters one device holds at once.

DeepSpeed's `PartitionedParameterCoordinator` (deepspeed/runtime/zero/
partitioned_param_coordinator.py, 0.19.8), once the first step has recorded the order in which
submodules run (the trace: the forward's order, then the backward's, its reverse), runs every
step like this:

- `fetch_sub_module`: before a submodule runs, all-gather its parameters, then prefetch the
  parameters that follow in the trace (`__param_queue`, consumed in order) up to
  `stage3_prefetch_bucket_size` elements, never beyond `stage3_max_live_parameters` available;
- `release_sub_module`: after it ran, release its parameters unless the trace uses them again
  before `stage3_max_reuse_distance` elements of other submodules' parameters have gone by
  (`__params_to_release`), or they were prefetched for a later use;
- parameters of at most `stage3_param_persistence_threshold` elements are never released: they
  are whole on every device from the start (`planner.sharding` counts them in the held weights).

`gathered_window` replays that policy over the model's submodules (a submodule: the parameters
of one module, as ZeRO-3 fetches a module's direct parameters) and returns the most bytes
available at once in the forward and in the backward. The first step, before the trace exists,
releases every submodule right after it ran and holds less. At the turn from forward to
backward the last submodule is kept for its immediate reuse while the prefetch runs ahead of it,
so the backward can hold one more prefetched submodule than the forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

__all__ = ["Submodule", "gathered_window"]


@dataclass(frozen=True)
class Submodule:
    """One module's direct parameters: `numel` all of them (what the reuse distance counts),
    `releasable` the elements of those above the persistence threshold and their `bytes`."""
    name: str
    numel: int
    releasable: int
    bytes: int


def gathered_window(modules: list[Submodule], prefetch: int, max_live: int, reuse: int) -> tuple[int, int]:
    """(forward, backward): the most bytes of gathered (releasable) parameters available at once
    while a submodule runs, over a steady-state step whose trace is `modules` then its reverse.

    >>> m = [Submodule(f"l{i}", 10, 10, 20) for i in range(4)]      # four modules of 10 elements
    >>> gathered_window(m, prefetch=0, max_live=10**9, reuse=0)     # only the running module
    (20, 20)
    >>> gathered_window(m, prefetch=10, max_live=10**9, reuse=0)    # + one prefetched; at the turn
    (40, 60)
    >>> gathered_window(m, prefetch=0, max_live=10**9, reuse=25)    # l2, l3 kept for their backward
    (40, 40)
    >>> gathered_window(m, prefetch=10, max_live=10, reuse=0)       # max_live stops the prefetch
    (20, 20)
    """
    trace = modules + modules[::-1]
    index = {m.name: k for k, m in enumerate(modules)}
    ids = [index[m.name] for m in trace]
    cum = [0, *accumulate(m.numel for m in trace)]
    nxt, last = [None] * len(trace), {}
    for i in range(len(trace) - 1, -1, -1):
        nxt[i], last[ids[i]] = last.get(ids[i]), i
    available: set[int] = set()
    held = queue = 0
    held_bytes, until = 0, {}
    peaks = [0, 0]
    for i, k in enumerate(ids):
        if k not in available:
            available.add(k)
            held, held_bytes = held + trace[i].releasable, held_bytes + trace[i].bytes
        queue = max(queue, i + 1)
        budget, got = min(max_live - held, prefetch), 0
        while queue < len(trace) and got < budget:
            j = ids[queue]
            if j not in available:
                available.add(j)
                held, held_bytes, got = held + trace[queue].releasable, held_bytes + trace[queue].bytes, \
                    got + trace[queue].releasable
            until[j] = max(until.get(j, -1), queue)
            queue += 1
        half = 0 if i < len(modules) else 1
        peaks[half] = max(peaks[half], held_bytes)
        reused = nxt[i] is not None and cum[nxt[i]] - cum[i + 1] < reuse
        if not reused and until.get(k, -1) <= i:
            available.discard(k)
            held, held_bytes = held - trace[i].releasable, held_bytes - trace[i].bytes
    return peaks[0], peaks[1]
