"""The Validate page's link to the profiler: run a burst or trace, compare, show, history.

`profiler` imports torch only when a run starts (in a child process for bursts), so this page stays
as quick to open as the others. Numbers shown are `profiler.compare(prediction, measurement)`.

A running burst shows where it is at least every `profiler.child.TICK_S` (its heartbeat): the
step and phase, the seconds spent in it against the same phase's last duration, and the total.
Each heartbeat is a Streamlit call, so a click on Cancel (or any rerun) interrupts the script
within a second; the interruption stops the burst's child process on its way out of
`run_in_child`, and the next run of the page says the burst was cancelled.
"""
from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass, field

import streamlit as st

from planner.format import human_bytes

from . import charts
from .text import md
from .views import model_text

__all__ = ["NEEDED", "missing_api", "modes", "devices", "default_mode", "default_precision", "BurstClock",
           "run", "start", "finished", "show_interrupted", "comparison_rows", "show", "history"]

#: what the page calls in `profiler`
NEEDED = ("run_burst", "compare", "entries")
_PHASES = ("forward", "backward", "optimizer_step")


def _profiler():
    return importlib.import_module("profiler")


def missing_api() -> list[str]:
    """Names the page needs that `profiler` does not provide; empty when it is ready."""
    try:
        prof = _profiler()
    except Exception as err:           # not installed, or broken mid-edit
        return [f"profiler ({type(err).__name__}: {err})"]
    return [f"profiler.{n}" for n in NEEDED if not hasattr(prof, n)]


def modes() -> list[str]:
    """burst always; trace when `profiler.tracing` is importable (FakeTensorMode tracing)."""
    return ["burst"] + (["trace"] if importlib.util.find_spec("profiler.tracing") else [])


def devices() -> list[str]:
    from .gpu_info import read_gpus
    return ["cpu"] + [f"cuda:{g.index}" for g in read_gpus().gpus]


def default_mode(available: list[str], device_list: list[str]) -> str:
    """What a first run should be: on a machine without a CUDA device, the trace (measured on
    this machine's 2 cores for llama-60m GaLore: a trace 6 s, a burst 24-40 s, and a bf16 burst
    on a CPU without native bf16 kernels minutes); with one, a real burst."""
    cuda = any(d.startswith("cuda") for d in device_list)
    return "burst" if cuda or "trace" not in available else "trace"


def default_precision(device_list: list[str]) -> str:
    """fp32 on a CPU-only machine (bf16 matmuls run at fp32 speed or far slower on CPUs without
    native bf16), the app's bf16 preset with a CUDA device."""
    return "bf16" if any(d.startswith("cuda") for d in device_list) else "fp32"


_PHASE_WORDS = {"build": "building the model and optimizer", "forward": "forward", "backward": "backward",
                "optimizer_step": "optimizer step"}


@dataclass
class BurstClock:
    """A running burst's progress from the child's events: where it is, how long the current
    phase has taken against the same phase last time, and a fraction that moves within a phase."""
    start: float
    event: dict | None = None
    since: float = 0.0
    took: dict[str, float] = field(default_factory=dict)    # each phase's last duration

    def on_event(self, event: dict, now: float) -> None:
        if self.event is not None:
            self.took[self.event.get("phase")] = now - self.since
        self.event, self.since = event, now

    def fraction(self, now: float) -> float:
        ev = self.event or {}
        total, step, phase = max(1, int(ev.get("total") or 1)), int(ev.get("step") or 0), ev.get("phase")
        if phase not in _PHASES or step < 1:
            return 0.0
        expected = self.took.get(phase)
        within = min(0.95, (now - self.since) / expected) if expected else 0.0
        return min(1.0, ((step - 1) * len(_PHASES) + _PHASES.index(phase) + within) / (total * len(_PHASES)))

    def text(self, now: float) -> str:
        elapsed = now - self.start
        if self.event is None:
            return f"Starting the child process (it imports torch)… {elapsed:.0f} s"
        ev, in_phase = self.event, now - self.since
        word = _PHASE_WORDS.get(ev.get("phase"), str(ev.get("phase")))
        where = word if not ev.get("step") else f"step {ev['step']} of {ev.get('total')}: {word}"
        last = self.took.get(ev.get("phase"))
        took = f" (last time {last:.0f} s)" if last is not None and ev.get("step") else ""
        return f"{where[0].upper()}{where[1:]} — {in_phase:.0f} s in this phase{took}, {elapsed:.0f} s in all"


def run(spec, mode: str, device: str, steps: int, progress, clock=time.monotonic):
    """A `BurstResult`/`TraceResult`; `progress(fraction, text)` is called as the run advances and,
    for a burst, at every heartbeat (an exception it raises stops the burst's child process)."""
    prof = _profiler()
    if mode == "trace":
        progress(0.05, "Tracing one full-size step under FakeTensorMode (in this process, about 5-10 s)…")
        return prof.trace(spec)
    beat = BurstClock(clock())

    def on_event(event: dict) -> None:
        beat.on_event(event, clock())
        progress(beat.fraction(clock()), beat.text(clock()))

    return prof.run_burst(spec, steps=steps, warmup=1, device=device, on_progress=on_event,
                          on_tick=lambda seconds, last: progress(beat.fraction(clock()), beat.text(clock())))


_RUNNING, _CANCELLED = "val_running", "val_cancelled"


def start(mode: str) -> None:
    """Mark a run as started (a run the page never finishes was interrupted: `show_interrupted`)."""
    st.session_state[_RUNNING] = {"mode": mode, "started": time.time()}
    st.session_state.pop(_CANCELLED, None)


def cancel() -> None:
    """The Cancel button's callback: runs before the rerun that interrupts the burst."""
    st.session_state[_CANCELLED] = True


def finished() -> None:
    st.session_state.pop(_RUNNING, None)


def show_interrupted() -> None:
    """Say that the last run was stopped before it finished (its child process with it)."""
    running = st.session_state.pop(_RUNNING, None)
    if not running:
        return
    seconds = time.time() - running["started"]
    if st.session_state.pop(_CANCELLED, False):
        st.warning(f"Cancelled: the {running['mode']} was stopped after {seconds:.0f} s (its child process "
                   "was ended); nothing was measured.")
    else:
        st.warning(f"The {running['mode']} was stopped after {seconds:.0f} s because the page re-ran "
                   "(an input changed): run it again to measure.")


def comparison_rows(result, predicted, mode: str) -> list[dict]:
    """`profiler.compare(prediction, measurement)` as flat rows with the full spec in each."""
    comparison = _profiler().compare(predicted, result.measurement, mode=mode)
    return [{**result.spec.as_dict(), "device": getattr(result, "device", "fake (trace)"), **row}
            for row in comparison.to_records()]


def show(result, predicted, mode: str) -> list[dict]:
    """A run's verdict, the predicted-vs-measured chart and table; returns the rows (for download)."""
    if getattr(result, "history_warning", ""):
        st.warning(f"The result below is not in the validation history: {md(result.history_warning)}")
    if result.status == "cancelled":
        st.warning(f"Cancelled: {md(result.message)}.")
        return []
    if not result.ok:
        st.error(f"The {mode} did not measure: {result.status} — {md(result.message)}")
        return []
    rows = comparison_rows(result, predicted, mode)
    peak = next((r for r in rows if r["component"] == "peak"), None)
    st.success(f"{mode} of {model_text(predicted)} with {result.spec.method} measured in {result.seconds:.1f} s: "
               f"tensor peak {human_bytes(result.measurement.peak_bytes)}"
               + (f" (planner: {human_bytes(peak['predicted_bytes'])}, its peak without the runtime overhead)."
                  if peak else "."))
    st.plotly_chart(charts.predicted_vs_measured(rows), key="val_chart")
    rel = lambda v: "-" if v is None else f"{v:+.1%}"
    st.dataframe([{"component": r["component"], "predicted": human_bytes(r["predicted_bytes"]),
                   "measured": human_bytes(r["measured_bytes"]), "error": human_bytes(r["abs_error"]),
                   "relative": rel(r["relative_error"])} for r in rows], hide_index=True, key="val_table")
    return rows


def history(limit: int = 100) -> list[dict]:
    """The profiler's history store, newest first, one flat row per run (spec in its columns).
    A history that cannot be read is a warning on the page and no rows, never an exception."""
    try:
        found = _profiler().entries(limit=limit)
    except ValueError as err:           # profiler.history.HistoryError: not a readable history
        st.warning(md(err))
        return []
    out = []
    for e in found:
        result = e.result if isinstance(e.result, dict) else {}
        measurement = result.get("measurement")
        measured = measurement.get("peak_bytes") if isinstance(measurement, dict) else None
        out.append({"id": e.id, "created": e.created, "kind": e.kind, "model": e.model, "method": e.method,
                    "status": e.status, "measured_peak": human_bytes(measured) if isinstance(measured, int) else "",
                    "device": e.device, "message": result.get("message", ""),
                    **{k: v for k, v in e.spec.items() if k not in ("model", "method")}})
    return out
