"""PyTorch's CUDA caching allocator, modelled: the memory a training step reserves beyond what
its tensors allocate.

`torch.cuda.max_memory_allocated` counts live blocks; `max_memory_reserved` counts the segments
the allocator obtained from `cudaMalloc` and keeps cached. The rules below are those of
c10/cuda/CUDACachingAllocator.cpp (pytorch/pytorch, 2.x; `round_size`, `get_allocation_size`,
`should_split`, `get_free_block`, `alloc_block`, `release_cached_blocks`, Note [Expandable
Segments]) and CUDAAllocatorConfig (PYTORCH_CUDA_ALLOC_CONF):

* every request is rounded up to 512 B (`kMinBlockSize`); with `roundup_power2_divisions:N` a
  request above 512·N B is rounded up to the next of N equal divisions of its power-of-2 interval;
* requests of at most 1 MiB (`kSmallSize`) live in the small pool, carved out of 2 MiB segments;
  larger ones in the large pool: below 10 MiB (`kMinLargeAlloc`) out of 20 MiB segments
  (`kLargeBuffer`), from 10 MiB up in a segment of their own size rounded up to 2 MiB;
* a request takes the smallest cached free block that holds it (best fit, same stream) and splits
  it when the rest is worth keeping: at least 512 B in the small pool, more than 1 MiB in the large
  pool (a smaller rest stays inside the block and counts as allocated); with `max_split_size_mb`
  blocks of that size or more are never split, never serve smaller requests, and serve a larger
  one only within 20 MiB of its size;
* freed blocks stay cached and merge with free neighbours of the same segment; segments are only
  released when a `cudaMalloc` fails (all whole free segments are then freed and the call retried)
  or on `torch.cuda.empty_cache()`;
* with `expandable_segments:True` each pool is one segment that grows in pages (2 MiB small,
  20 MiB large) and free ranges anywhere in it are reusable: almost no fragmentation.

The model (`reserved_peak`, a closed form): the tensors of a training step fall into classes
whose blocks the allocator does not trade in steady state, because their sizes differ and each
finds its own cached blocks again in the next step (best fit takes an exact-size free block
first):

* persistent: weights, adapters, optimizer states, projections, the cuBLAS workspace;
* parameter-sized transients: gradients, the optimizer step's temporaries, a projection refresh;
* activation-sized transients: saved activations, the loss's buffers, a layer's recomputation;
* what loading left behind (a 4-bit base's bf16 staging buffers).

Each class holds the segments of its own high-water mark over the step (the packing and rounding
rules above, per group of equal tensors); the allocated peak is one instant, at which the classes
below their high-water leave cached segments free:

    allocated = Σ blocks(class at the allocated peak)
    reserved  = Σ segments(class high-water) + working_set · W
    required  = Σ segments(class at the allocated peak) + working_set · W

W is one layer's saved activation bytes: the per-layer working memory (intermediates inside a
layer's forward, its recomputation and activation gradients in backward) recurs layer after layer
in blocks the long-lived tensors do not fill, and about `working_set` of it stays cached; the
fraction is calibrated on published runs (planner/allocator_calibration.py). `required` is the
reserved memory the step cannot do without: when a `cudaMalloc` fails the allocator frees every
whole cached segment and retries, so other classes' idle segments do not make a step fail.
With expandable segments every class shares one growing segment per pool: the reserved memory is
the allocated peak rounded up to pages, with no class or working-memory term. `max_split_size_mb`
enters through the packing only (a block at or above it is never split, so its segment's rest
stays in it); its effect on which free block serves which request is not modelled.

Every term is monotone in every tensor's size and count, so a search for the largest batch or
sequence that fits stays exact. Tensors come as `Piece`s, bytes of tensors of about one size, so
that a class whose bytes grow continuously (activations with the batch) is packed continuously.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["MIB", "MIN_BLOCK", "SMALL_SIZE", "SMALL_BUFFER", "MIN_LARGE_ALLOC", "LARGE_BUFFER",
           "ROUND_LARGE", "AllocatorSettings", "Piece", "TensorClass", "Workload", "AllocatorPeak",
           "round_size", "segment_size", "per_tensor", "reserved_peak"]

MIB = 1 << 20
MIN_BLOCK = 512                 # kMinBlockSize: every request is rounded to a multiple
SMALL_SIZE = 1 * MIB            # kSmallSize: the largest small-pool request
SMALL_BUFFER = 2 * MIB          # kSmallBuffer: small-pool segments (and expandable pages)
MIN_LARGE_ALLOC = 10 * MIB      # kMinLargeAlloc: below it, large requests share 20 MiB segments
LARGE_BUFFER = 20 * MIB         # kLargeBuffer: shared large segments (and expandable pages)
ROUND_LARGE = 2 * MIB           # kRoundLarge: segments of larger requests are rounded to it

_KEYS = ("expandable_segments", "max_split_size_mb", "roundup_power2_divisions",
         "garbage_collection_threshold", "backend", "pinned_use_cuda_host_register",
         "pinned_num_register_threads", "release_lock_on_cudamalloc", "pinned_use_background_threads")


@dataclass(frozen=True)
class AllocatorSettings:
    """The PYTORCH_CUDA_ALLOC_CONF options that change how much is reserved."""
    expandable_segments: bool = False
    max_split_size: int | None = None          # bytes; None: unlimited (the default)
    roundup_power2_divisions: int = 0          # 0 or 1: off (the default)

    @classmethod
    def parse(cls, conf: str | None) -> "AllocatorSettings":
        """Read a PYTORCH_CUDA_ALLOC_CONF string ("expandable_segments:True,max_split_size_mb:512").

        Options that do not change the reserved peak of one step (garbage collection, pinned
        memory, the backend) are accepted and ignored; anything else is a ValueError.
        """
        if conf is None or not str(conf).strip():
            return cls()
        values: dict = {}
        for item in re.split(r",(?![^\[]*\])", str(conf)):      # commas outside [..] lists
            key, sep, value = item.strip().partition(":")
            key, value = key.strip(), value.strip()
            if not sep or key not in _KEYS:
                raise ValueError(f"allocator option {item.strip()!r} is not understood: use "
                                 "key:value pairs such as expandable_segments:True, "
                                 "max_split_size_mb:512, roundup_power2_divisions:4")
            values[key] = value
        if values.get("backend", "native") != "native":
            raise ValueError("only the native caching allocator is modelled (backend:native); "
                             "cudaMallocAsync pools memory in the driver")
        return cls(_flag(values.get("expandable_segments", "False")),
                   _positive_mib(values.get("max_split_size_mb")),
                   _divisions(values.get("roundup_power2_divisions", "0")))


def _flag(value: str) -> bool:
    if value not in ("True", "False", "true", "false"):
        raise ValueError(f"expandable_segments must be True or False, got {value!r}")
    return value.lower() == "true"


def _positive_mib(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        mib = int(value)
    except ValueError:
        raise ValueError(f"max_split_size_mb must be a whole number of MiB, got {value!r}") from None
    if mib <= LARGE_BUFFER // MIB:         # CUDAAllocatorConfig's own check
        raise ValueError(f"max_split_size_mb must be more than {LARGE_BUFFER // MIB}, got {mib}")
    return mib * MIB


def _divisions(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError("roundup_power2_divisions is modelled as one power of 2 for every size "
                         f"(such as 4), got {value!r}") from None
    if n < 0 or (n > 1 and n & (n - 1)):
        raise ValueError(f"roundup_power2_divisions must be a power of 2, got {n}")
    return n


def round_size(size: int, settings: AllocatorSettings = AllocatorSettings()) -> int:
    """The block size of a request (CUDACachingAllocator's `round_size`).

    >>> round_size(1), round_size(513), round_size(5000, AllocatorSettings(roundup_power2_divisions=4))
    (512, 1024, 5120)
    """
    if size < MIN_BLOCK:
        return MIN_BLOCK
    n = settings.roundup_power2_divisions
    if n > 1 and size > MIN_BLOCK * n and size & (size - 1):
        floor = 1 << (size.bit_length() - 1)
        step = floor // n
        return -(-size // step) * step
    return -(-size // MIN_BLOCK) * MIN_BLOCK


def segment_size(rounded: int) -> int:
    """The `cudaMalloc` a request makes when no cached block holds it (`get_allocation_size`).

    >>> [segment_size(s) // MIB for s in (4096, 5 * MIB, 11 * MIB + 1)]
    [2, 20, 12]
    """
    if rounded <= SMALL_SIZE:
        return SMALL_BUFFER
    if rounded < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-rounded // ROUND_LARGE) * ROUND_LARGE




class Piece(NamedTuple):
    """`bytes` worth of tensors of about `unit` bytes each (one tensor: bytes == unit)."""
    bytes: int
    unit: int

    @classmethod
    def of(cls, size: int, count: int = 1) -> "Piece":
        return cls(size * count, size)


@dataclass(frozen=True)
class TensorClass:
    """Tensors whose blocks the allocator keeps among themselves: their high-water over the step
    and what of them is live at the step's allocated peak."""
    name: str
    high: tuple[Piece, ...]
    at_peak: tuple[Piece, ...] = ()


@dataclass(frozen=True)
class Workload:
    """A training step for the allocator: persistent tensors, transient classes, and W, one
    layer's saved activation bytes (the working-memory term)."""
    persistent: tuple[Piece, ...]
    classes: tuple[TensorClass, ...]
    working: int = 0


@dataclass(frozen=True)
class AllocatorPeak:
    """What the allocator holds over a step.

    allocated: `max_memory_allocated`, blocks as rounded; requested: the tensors' own bytes at that
    instant; reserved: `max_memory_reserved` on a device with room to spare; required: the reserved
    memory the step cannot do without (whole idle segments are given back under memory pressure).
    """
    allocated: int
    requested: int
    reserved: int
    required: int

    @property
    def rounding(self) -> int:
        return self.allocated - self.requested

    @property
    def cached(self) -> int:
        """Reserved and free at the allocated peak on a device with room to spare."""
        return self.reserved - self.allocated


def _absorbed(rest: int, small: bool) -> int:
    """The rest of a block too small to split off stays in the allocated block (`should_split`:
    at least 512 B in the small pool, more than 1 MiB in the large pool)."""
    return rest if rest < (MIN_BLOCK if small else SMALL_SIZE + 1) else 0


@functools.lru_cache(maxsize=4096)
def per_tensor(unit: int, settings: AllocatorSettings = AllocatorSettings()) -> tuple[float, float]:
    """(allocated block, reserved segment) bytes per tensor of `unit` bytes when such tensors are
    allocated one after another into fresh segments: small and sub-10 MiB tensors are packed
    `k = segment // block` to a segment, whose last tensor absorbs a rest too small to split;
    larger ones get a segment of their own rounded up to 2 MiB.

    >>> [round(x / MIB, 3) for x in per_tensor(32 * MIB)]         # a 4096 x 4096 bf16 weight
    [32.0, 32.0]
    >>> [round(x / MIB, 3) for x in per_tensor(6 * MIB)]          # three to a 20 MiB segment
    [6.0, 6.667]
    >>> [round(x / MIB, 3) for x in per_tensor(21 * MIB + 512)]   # a 1 MiB rest is absorbed
    [22.0, 22.0]
    """
    r = round_size(unit, settings)
    if settings.expandable_segments:
        return float(r), float(r)                  # pages are added over the whole pool
    seg, small = segment_size(r), r <= SMALL_SIZE
    big = settings.max_split_size
    if big is not None and r >= big:               # an oversize block is never split
        return float(seg), float(seg)
    k = 1 if r >= MIN_LARGE_ALLOC else seg // r
    block = r + _absorbed(seg - k * r, small) / k
    return block, seg / k


def _sizes(pieces, settings) -> tuple[float, float, float, float]:
    """(requested, allocated, reserved, small-pool allocated) bytes of `pieces`."""
    req = alloc = res = small = 0.0
    for p in pieces:
        if p.bytes <= 0 or p.unit <= 0:
            continue
        block, seg = per_tensor(p.unit, settings)
        n = p.bytes / p.unit
        req += p.bytes
        alloc += n * block
        res += n * seg
        if round_size(p.unit, settings) <= SMALL_SIZE:
            small += n * block
    return req, alloc, res, small


def _pages(small: float, large: float) -> int:
    return -(-int(small) // SMALL_BUFFER) * SMALL_BUFFER + -(-int(large) // LARGE_BUFFER) * LARGE_BUFFER


@functools.lru_cache(maxsize=512)
def reserved_peak(workload: Workload, settings: AllocatorSettings = AllocatorSettings(),
                  working_set: float = 0.0) -> AllocatorPeak:
    """The step's allocated, reserved and required memory under the allocator's rules (see the
    module docstring for the model)."""
    req, alloc, res, small = _sizes(workload.persistent, settings)
    required = res
    for cls in workload.classes:
        r_peak, a_peak, s_peak, small_peak = _sizes(cls.at_peak, settings)
        req, alloc, small = req + r_peak, alloc + a_peak, small + small_peak
        res += max(_sizes(cls.high, settings)[2], s_peak)
        required += s_peak
    work = working_set * max(workload.working, 0)
    if settings.expandable_segments:
        pages = _pages(small, alloc - small)
        return AllocatorPeak(round(alloc), round(req), pages, pages)
    return AllocatorPeak(round(alloc), round(req), round(res + work), round(required + work))
