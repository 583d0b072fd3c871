"""The allocator model checked against published runs that report both the allocated peak and
the reserved (or nvidia-smi) memory: planner/data/allocator_calibration.json.

Each run is a TrainingSpec plus its published figures. The model is evaluated on the run's
*measured* allocated peak, so that what is tested is the allocator model, not the planner's
activation model:

    predicted = measured allocated + the model's cached memory (reserved - allocated) + context

(for a run that reports `max_memory_reserved` rather than nvidia-smi, the context is left out).
`fit` chooses the model's two free constants, the working-memory fraction and the context, on the
runs marked "fit" by least squares of the relative error (a grid: the model is piecewise linear
in the fraction); the runs marked "check" are held out. Runs close to the device's capacity
("pressure") cannot show their unconstrained reserved memory, since the allocator gives cached
segments back before it runs out: for those the prediction must be at least what was measured,
and the memory the step needs must fit the device.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path

from .estimate import estimate
from .gpus import get_gpu
from .overhead import DEFAULT_OVERHEAD, Overhead
from .peak import phase_peaks
from .resolve import resolve_spec
from .spec import TrainingSpec, spec_fields

__all__ = ["DATA", "USES", "Run", "Outcome", "load_runs", "device_for", "cached_bytes", "evaluate",
           "fit", "capacity"]

DATA = Path(__file__).with_name("data") / "allocator_calibration.json"
USES = ("fit", "check", "pressure")


@dataclass(frozen=True)
class Run:
    id: str
    source: str
    setup: str
    gpu: str
    spec: TrainingSpec
    allocated: int                 # the published max_memory_allocated peak
    device: int | None             # the published nvidia-smi process memory
    reserved: int | None           # the published max_memory_reserved
    use: str                       # fit | check | pressure

    @property
    def measured(self) -> int:
        return self.device if self.device is not None else self.reserved


@dataclass(frozen=True)
class Outcome:
    run: Run
    predicted: int                 # from the measured allocated peak (see the module docstring)
    planner: int                   # the planner's own figure, its allocated peak included
    needed: int                    # the device memory the step needs, as the planner says

    @property
    def measured(self) -> int:
        return self.run.measured

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1

    @property
    def planner_error(self) -> float:
        return self.planner / self.measured - 1


def _run(e: dict) -> Run:
    unknown = set(e["spec"]) - set(spec_fields())
    if unknown:
        raise ValueError(f"run {e['id']}: unknown spec field(s) {sorted(unknown)}")
    if e["use"] not in USES:
        raise ValueError(f"run {e['id']}: use must be one of {', '.join(USES)}")
    if not str(e.get("source", "")).startswith("https://"):
        raise ValueError(f"run {e['id']}: every run needs its source URL")
    return Run(e["id"], e["source"], e["setup"], e["gpu"], TrainingSpec(**e["spec"]),
               int(e["allocated_bytes"]), e.get("device_bytes"), e.get("reserved_bytes"), e["use"])


@functools.lru_cache(maxsize=2)
def load_runs(path: str = str(DATA)) -> tuple[Run, ...]:
    return tuple(_run(e) for e in json.loads(Path(path).read_text())["runs"])


def device_for(spec: TrainingSpec, overhead: Overhead):
    """The planner's DeviceMemory for `spec` with the given overhead constants."""
    b = estimate(spec.replace(gpu=None))
    return phase_peaks(resolve_spec(spec), list(b.rows), b.sizes, overhead).device


def cached_bytes(spec: TrainingSpec, overhead: Overhead) -> int:
    """The allocator model's reserved - allocated for `spec`."""
    d = device_for(spec, overhead)
    return d.reserved - d.allocated


def evaluate(runs=None, overhead: Overhead = DEFAULT_OVERHEAD) -> list[Outcome]:
    """Each run's prediction from its measured allocated peak, beside the planner's own."""
    out = []
    for run in runs if runs is not None else load_runs():
        d = device_for(run.spec.replace(gpu=run.gpu), overhead)
        context = overhead.context_bytes if run.device is not None else 0
        out.append(Outcome(run, run.allocated + d.reserved - d.allocated + context,
                           d.reserved + context, d.needed))
    return out


def fit(runs=None, working_sets=None, contexts=None) -> tuple[Overhead, list[Outcome]]:
    """The working-memory fraction (0 to 2 in steps of 0.05) and context (0 to 3000 MiB in steps
    of 25 MiB) that minimise the squared relative error on the "fit" runs."""
    runs = [r for r in (runs if runs is not None else load_runs()) if r.use == "fit"]
    working_sets = working_sets or [i / 20 for i in range(0, 41)]
    contexts = contexts or [m * (1 << 20) for m in range(0, 3001, 25)]
    best = None
    for w in working_sets:
        base = replace(DEFAULT_OVERHEAD, working_set=w, context_bytes=0)
        cached = [cached_bytes(r.spec.replace(gpu=r.gpu), base) for r in runs]
        for c in contexts:
            loss = sum(((r.allocated + k + (c if r.device is not None else 0)) / r.measured - 1) ** 2
                       for r, k in zip(runs, cached))
            if best is None or loss < best[0] - 1e-15:
                best = (loss, w, c)
    chosen = replace(DEFAULT_OVERHEAD, working_set=best[1], context_bytes=best[2])
    return chosen, evaluate(runs, chosen)


def capacity(run: Run) -> int:
    return get_gpu(run.gpu).capacity_bytes
