"""Planner calls the pages show as sweeps: plain loops over `planner.compare_records`,
so every number is the planner's own (no Streamlit, no formulas here)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from planner import METHODS, TrainingSpec
from planner.comparison import compare_records

__all__ = ["SWEEPS", "DEVICE_COUNTS", "sweep", "methods_with", "device_grid", "fewest_devices"]

#: the device counts the "how many GPUs" view visits by default (a node is 8)
DEVICE_COUNTS = (1, 2, 4, 8, 16, 32, 64)

#: the values each sweep visits (powers of two, as people choose them)
SWEEPS: dict[str, tuple[int, ...]] = {
    "rank": (4, 8, 16, 32, 64, 128, 256, 512, 1024),
    "batch": (1, 2, 4, 8, 16, 32, 64),
    "seq": (128, 256, 512, 1024, 2048, 4096, 8192),
}


def methods_with(option: str, methods: Iterable[str] | None = None) -> list[str]:
    """The methods (of `methods`, default all) that take `option`; every method for batch/seq."""
    ids = list(methods or METHODS)
    return ids if option not in ("rank", "update_proj_gap", "scale") else [
        m for m in ids if option in METHODS[m].options]


def sweep(base: TrainingSpec, field: str, values: Sequence[int] | None = None,
          methods: Iterable[str] | None = None) -> list[dict]:
    """One `compare_records` row per method x value of `field`, tagged with `sweep_value`.
    A value a method rejects (a rank above its matrices) is a row with its reason in `error`."""
    if field not in SWEEPS:
        raise ValueError(f"cannot sweep {field!r}: choose one of {', '.join(SWEEPS)}")
    chosen = methods_with(field, methods)
    if not chosen:
        raise ValueError(f"none of the chosen methods takes a {field}; pick a projected or adapter method")
    rows = []
    for value in values or SWEEPS[field]:
        for row in compare_records(base.replace(**{field: value}), chosen):
            rows.append({**row, "sweep": field, "sweep_value": value})
    return rows


def device_grid(base: TrainingSpec, counts: Sequence[int] = DEVICE_COUNTS, sharding: str = "none",
                methods: Iterable[str] | None = None) -> list[dict]:
    """One `compare_records` row per method x device count (`devices` in the row), every byte per
    GPU; one device is one GPU without an engine unless the spec offloads. `sharding` "none"
    leaves each method its default for several devices (FSDP2, or DDP)."""
    rows = []
    for n in counts:
        single = n == 1 and base.offload == "none"
        spec = base.replace(devices=n, sharding="none" if single else sharding,
                            shard_group=None if single else base.shard_group)
        rows += compare_records(spec, methods)
    return rows


def fewest_devices(base: TrainingSpec, sharding: str = "none", methods: Iterable[str] | None = None) -> list[dict]:
    """Per method, the fewest GPUs of `base.gpu` it fits on (`planner.device_count.min_devices`),
    or why no count does."""
    from planner.comparison import method_specs
    from planner.device_count import min_devices
    out = []
    for spec in method_specs(base.replace(devices=1, sharding=sharding), methods):
        try:
            out.append({"method": spec.method, **min_devices(spec).to_record(), "error": ""})
        except ValueError as err:
            out.append({"method": spec.method, "min_devices": None, "error": str(err)})
    return out
