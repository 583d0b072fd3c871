"""`compare(prediction, measurement)`: the planner's numbers beside the profiler's, by component.

Predicted sizes are the planner's `MemoryBreakdown.sizes` — each component's full size (every
gradient, the activations stored at the end of the forward) — which is what a measurement counts
tensor by tensor. `peak` compares the planner's peak without its runtime overhead (CUDA context,
workspace, allocator slack: `peak_bytes - components.overhead`) with the measured tensor peak;
On CUDA, `allocated` compares the planner's `torch.cuda.max_memory_allocated` (tensors, cuBLAS
workspace, block rounding) with the measured one, `reserved` its `max_memory_reserved` with the
measured one, and `device_peak` its reserved + CUDA context with the memory NVML saw the process use.
"""
from __future__ import annotations

from dataclasses import dataclass

from .results import Measurement

__all__ = ["COMPARED", "ComponentError", "Comparison", "compare", "predicted_bytes"]

#: components compared by default, in report order.
COMPARED = ("weights", "gradients", "optimizer_states", "projection", "adapters", "activations",
            "host", "peak", "allocated", "reserved", "device_peak")


@dataclass(frozen=True)
class ComponentError:
    component: str
    predicted_bytes: int
    measured_bytes: int

    @property
    def abs_error(self) -> int:
        """predicted - measured (positive: the planner over-predicts)."""
        return self.predicted_bytes - self.measured_bytes

    @property
    def relative_error(self) -> float | None:
        """(predicted - measured) / measured; 0 when both are 0, None when only measured is 0."""
        if self.measured_bytes:
            return self.abs_error / self.measured_bytes
        return 0.0 if self.predicted_bytes == 0 else None

    def to_record(self) -> dict:
        return {"component": self.component, "predicted_bytes": self.predicted_bytes,
                "measured_bytes": self.measured_bytes, "abs_error": self.abs_error,
                "relative_error": self.relative_error}


@dataclass(frozen=True)
class Comparison:
    method: str
    mode: str                      # "burst" | "trace"
    rows: tuple[ComponentError, ...]

    def __getitem__(self, component: str) -> ComponentError:
        for row in self.rows:
            if row.component == component:
                return row
        raise KeyError(f"{component!r} was not compared (compared: {', '.join(self.components)})")

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(r.component for r in self.rows)

    def to_records(self) -> list[dict]:
        """{method, mode, component, predicted_bytes, measured_bytes, abs_error, relative_error}."""
        return [{"method": self.method, "mode": self.mode, **row.to_record()} for row in self.rows]


def predicted_bytes(prediction) -> dict[str, int]:
    """The planner's full component sizes, `peak` (tensor peak) and `device_peak` (with overhead)."""
    sizes = prediction.sizes.as_dict()
    if not any(sizes.values()):          # a planner without `sizes`: sum its per-matrix rows
        names = ("weights", "gradients", "optimizer_states", "projection", "adapters")
        sizes = {n: sum(r.count * getattr(r.memory, n) for r in prediction.rows) for n in names}
        sizes["activations"] = prediction.components.activations
    overhead = prediction.components.overhead
    if getattr(prediction, "host_bytes", 0):       # offloaded activations, in pinned host memory
        sizes["host"] = prediction.host_bytes
    device = getattr(prediction, "device", None)
    if device is None:
        return {**sizes, "peak": prediction.peak_bytes - overhead, "device_peak": prediction.peak_bytes}
    return {**sizes, "peak": prediction.peak_bytes - overhead, "allocated": device.allocated,
            "reserved": device.reserved, "device_peak": device.total}


def _measured(measurement: Measurement) -> dict[str, int]:
    out = {**measurement.components, "peak": measurement.peak_bytes}
    stats = measurement.device_stats
    if "max_reserved_bytes" in stats:             # CUDA: the allocator's own counters
        out["allocated"] = measurement.peak_bytes
        out["reserved"] = stats["max_reserved_bytes"]
    if "process_used_bytes" in stats:
        out["device_peak"] = stats["process_used_bytes"]
    return out


def compare(prediction, measurement: Measurement, *, mode: str = "burst",
            components: tuple[str, ...] | None = None) -> Comparison:
    """Per component: predicted, measured, absolute and relative error.

    Compares `components` (default `COMPARED`) that both sides report; a component the
    measurement has no figure for (adapters of a full fine-tune on a device without NVML...) is
    left out rather than compared with zero.
    """
    predicted, measured = predicted_bytes(prediction), _measured(measurement)
    names = components or COMPARED
    rows = tuple(ComponentError(n, int(predicted[n]), int(measured[n]))
                 for n in names if n in predicted and n in measured)
    return Comparison(prediction.spec.method, mode, rows)
