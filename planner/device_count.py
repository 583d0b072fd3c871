"""`min_devices`: the fewest GPUs of one kind a run needs, searched over the device count.

Per-device memory under a sharding engine falls as devices are added (each holds 1/N of what
the engine shards) towards a floor that no device count removes: the activations of its own
micro-batch, the engine's buffers, what it keeps whole. The search doubles N from 2 until a
count fits (or `MAX_DEVICES` is passed), bisects the last doubling, and then steps down while
one device fewer still fits, so that the byte-level padding of shards (ceil(d / N) rows) cannot
make it miss a smaller count. One device means one GPU without an engine unless the spec
offloads (offload needs the engine, as ZeRO-Offload on one GPU).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .estimate import estimate
from .methods import get_method
from .spec import TrainingSpec

__all__ = ["DeviceCount", "MAX_DEVICES", "min_devices", "multi_device_sharding", "devices_text"]

#: the largest data-parallel degree searched: a cluster's worth of GPUs; beyond it the floor
#: (activations and engine buffers) decides, and the answer says so
MAX_DEVICES = 1024


@dataclass(frozen=True)
class DeviceCount:
    """The fewest devices that fit (None: none up to `upper`), under which sharding, the
    per-device peak there, and a sentence saying why when the count is not found."""
    devices: int | None
    sharding: str
    peak_bytes: int | None
    upper: int
    note: str = ""

    def to_record(self) -> dict:
        return {"min_devices": self.devices, "min_devices_sharding": self.sharding,
                "min_devices_peak_bytes": self.peak_bytes, "min_devices_note": self.note}


def multi_device_sharding(spec: TrainingSpec) -> str | None:
    """The engine a device-count search uses: the spec's own, else the method's default for
    several devices (`planner.defaults`: FSDP2 where it runs, else DDP); None for a method that
    runs on one device only."""
    if spec.sharding != "none":
        return spec.sharding
    layouts = get_method(spec.method).sharding.layouts
    return "fsdp" if "dim0" in layouts else ("ddp" if "replicated" in layouts else None)


def _at(spec: TrainingSpec, n: int, sharding: str):
    """The estimate on n devices, or None when the planner refuses that count."""
    single = n == 1 and spec.offload == "none"
    try:
        return estimate(spec.replace(devices=n, sharding="none" if single else sharding,
                                     shard_group=None if single else spec.shard_group))
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)       # fit asks again for its "more GPUs" switch: one search
def min_devices(spec: TrainingSpec, sharding: str | None = None, upper: int = MAX_DEVICES) -> DeviceCount:
    """The smallest number of `spec.gpu`s the run fits on under `sharding` (default:
    `multi_device_sharding`). Raises ValueError for a spec that names no GPU."""
    if not spec.gpu:
        raise ValueError("a device count needs a GPU: name one (e.g. --gpu a100) or a capacity (--gpu 80GB)")
    engine = sharding or multi_device_sharding(spec)
    fits = lambda b: b is not None and b.fits
    one = _at(spec, 1, engine or "none")
    if fits(one):
        return DeviceCount(1, "none" if spec.offload == "none" else engine, one.peak_bytes, upper)
    if engine is None:
        return DeviceCount(None, "none", None, 1, f"{spec.method} runs on one device only, and it does not fit there")
    from .sharding import ENGINES
    if not ENGINES[engine].shards or engine == "hsdp":
        why = ("DDP replicates the whole model state on every device" if not ENGINES[engine].shards else
               "HSDP's per-device memory depends on its shard group, not on the device count")
        layouts = get_method(spec.method).sharding.layouts
        fix = ("shard with fsdp or zero3" if {"dim0", "per_param"} & set(layouts) else
               f"{spec.method} runs under DDP only ({get_method(spec.method).sharding.note})")
        return DeviceCount(None, engine, None, 1, f"more devices do not help under {ENGINES[engine].name}: {why}; "
                           + fix)
    lo, hi, b_hi = 1, 2, _at(spec, 2, engine)
    while not fits(b_hi) and hi < upper:
        lo, hi = hi, min(2 * hi, upper)
        b_hi = _at(spec, hi, engine)
    if not fits(b_hi):
        floor = f" (per device {b_hi.peak_bytes / (1 << 30):.2f} GiB at {upper})" if b_hi else ""
        return DeviceCount(None, engine, b_hi.peak_bytes if b_hi else None, upper,
                           f"no device count up to {upper} fits under {ENGINES[engine].name}{floor}: what every "
                           "device keeps whatever the count (its micro-batch's activations, the engine's buffers) "
                           "is too large; lower the batch or sequence, or checkpoint activations")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        b = _at(spec, mid, engine)
        lo, hi, b_hi = (lo, mid, b) if fits(b) else (mid, hi, b_hi)
    while hi > 2 and fits(b := _at(spec, hi - 1, engine)):
        hi, b_hi = hi - 1, b
    return DeviceCount(hi, engine, b_hi.peak_bytes, upper)


def devices_text(record) -> str:
    """A fit record's fewest GPUs as a table shows it: '9 (fsdp)', '1', or 'none'.

    >>> devices_text({"min_devices": 9, "min_devices_sharding": "fsdp"}), devices_text({"min_devices": None})
    ('9 (fsdp)', 'none')
    """
    n = record.get("min_devices")
    if n is None:
        return "none"
    sharding = record.get("min_devices_sharding")
    return str(n) if sharding in (None, "none") else f"{n} ({sharding})"
