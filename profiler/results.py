"""What the profiler returns: plain frozen dataclasses with JSON-ready `to_record()`.

Byte counts are named as the planner's components (`planner.breakdown.COMPONENTS`) so a
prediction and a measurement line up by name; anything a planner component has no name for
(`buffers`, `other`) is reported beside them, never folded in.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from planner.spec import TrainingSpec

__all__ = ["STATUSES", "Measurement", "Failure", "BurstResult", "TraceResult"]

#: ok: measured; oom: the device ran out of memory; error: the run raised; crashed: the child
#: process died (a signal, a hard exit); timeout: it ran past its time limit; unsupported: the
#: method or option cannot run here (the message says why, nothing was started); cancelled: the
#: caller stopped it.
STATUSES = ("ok", "oom", "error", "crashed", "timeout", "unsupported", "cancelled")


@dataclass(frozen=True)
class Measurement:
    """Bytes measured by one burst or trace.

    components: held tensor bytes per planner component — weights (parameters, persistent buffers,
        quantisation state of packed weights), gradients, optimizer_states, projection, adapters,
        activations (saved for backward at the end of the forward), temporaries (backward and
        optimizer-step scratch at the peak); plus `buffers` (non-persistent buffers such as rotary
        `inv_freq`) and `other` (inputs, loss).
    peak_bytes: the tensor peak of the step (MemTracker on CPU and in traces,
        `torch.cuda.max_memory_allocated` on CUDA).
    phases: peak bytes per phase: forward, backward, optimizer_step.
    categories: MemTracker's own categories at the peak (CPU bursts and traces).
    phase_categories: the same at each phase's peak (CUDA: only its "total").
    device_stats: CUDA: max_memory_reserved, NVML used bytes; CPU: peak and current RSS.
    kernels: whose kernels saved the activations: "cpu" (CPU bursts and traces: CPU dropout keeps
        a noise tensor in the activation dtype, SDPA falls back to its math kernel under dropout)
        or "cuda". LLaMA-style models (no dropout) save the same tensors either way.
    """
    components: dict[str, int]
    peak_bytes: int
    phases: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    phase_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    device_stats: dict[str, int] = field(default_factory=dict)
    kernels: str = "cpu"

    def to_record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, d: dict) -> "Measurement":
        return cls(**d)


@dataclass(frozen=True)
class Failure:
    """Where a run stopped: step (1-based over warm-up and measured steps), phase, bytes allocated."""
    step: int | None
    phase: str | None
    allocated_bytes: int | None = None
    exception: str = ""


def _spec_record(spec: TrainingSpec) -> dict:
    return spec.as_dict()


class _Result:
    """What bursts and traces share: a status, and a JSON-ready record tagged with the mode."""
    mode = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_record(self) -> dict:
        d = asdict(self)
        d["spec"] = _spec_record(self.spec)
        d["mode"] = self.mode
        return d


@dataclass(frozen=True)
class BurstResult(_Result):
    """One short real training run. `measurement` is None unless status is "ok"."""
    spec: TrainingSpec
    status: str
    message: str
    device: str
    steps: int
    warmup: int
    losses: tuple[float, ...] = ()
    step_seconds: tuple[float, ...] = ()
    tokens_per_second: float | None = None
    measurement: Measurement | None = None
    failure: Failure | None = None
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    history_warning: str = ""       # why the history could not record this result ("" if it did)

    mode = "burst"


@dataclass(frozen=True)
class TraceResult(_Result):
    """One full-size training step traced under FakeTensorMode (no memory allocated).

    traced_layers: the layer counts actually traced; `extrapolated` when the result for the
    model's full depth is the linear extrapolation of those (identical decoder layers).
    """
    spec: TrainingSpec
    status: str
    message: str
    measurement: Measurement | None = None
    layers: int = 0
    traced_layers: tuple[int, ...] = ()
    extrapolated: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    history_warning: str = ""       # why the history could not record this result ("" if it did)

    mode = "trace"
