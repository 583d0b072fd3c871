"""The Validate page's link to the profiler: run a burst or trace, compare, show, history.

`profiler` imports torch only when a run starts (in a child process for bursts), so this page stays
as quick to open as the others. Numbers shown are `profiler.compare(prediction, measurement)`.
"""
from __future__ import annotations

import importlib
import importlib.util

import streamlit as st

from planner.format import human_bytes

from . import charts

__all__ = ["NEEDED", "missing_api", "modes", "devices", "run", "comparison_rows", "show", "history"]

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


def _fraction(event: dict) -> float:
    """Progress of a burst from the child's {"step", "total", "phase"} events."""
    total = max(1, int(event.get("total") or 1))
    phase = _PHASES.index(event["phase"]) + 1 if event.get("phase") in _PHASES else 0
    return min(1.0, ((int(event.get("step") or 1) - 1) + phase / len(_PHASES)) / total)


def run(spec, mode: str, device: str, steps: int, progress):
    """A `BurstResult`/`TraceResult`; `progress(fraction, text)` is called as the run advances."""
    prof = _profiler()
    if mode == "trace":
        progress(0.05, "Tracing one full-size step under FakeTensorMode…")
        return prof.trace(spec)
    on_event = lambda ev: progress(_fraction(ev), f"step {ev.get('step')} of {ev.get('total')}: {ev.get('phase')}")
    return prof.run_burst(spec, steps=steps, warmup=1, device=device, on_progress=on_event)


def comparison_rows(result, predicted, mode: str) -> list[dict]:
    """`profiler.compare(prediction, measurement)` as flat rows with the full spec in each."""
    comparison = _profiler().compare(predicted, result.measurement, mode=mode)
    return [{**result.spec.as_dict(), "device": getattr(result, "device", "fake (trace)"), **row}
            for row in comparison.to_records()]


def show(result, predicted, mode: str) -> list[dict]:
    """A run's verdict, the predicted-vs-measured chart and table; returns the rows (for download)."""
    if not result.ok:
        st.error(f"The {mode} did not measure: {result.status} — {result.message}")
        return []
    rows = comparison_rows(result, predicted, mode)
    peak = next((r for r in rows if r["component"] == "peak"), None)
    st.success(f"{mode} of {predicted.model} with {result.spec.method} measured in {result.seconds:.1f} s: "
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
    """The profiler's history store, newest first, one flat row per run (spec in its columns)."""
    out = []
    for e in _profiler().entries(limit=limit):
        result = e.result if isinstance(e.result, dict) else {}
        measured = (result.get("measurement") or {}).get("peak_bytes")
        out.append({"id": e.id, "created": e.created, "kind": e.kind, "device": e.device,
                    "status": e.status, "measured_peak": human_bytes(measured) if measured else "",
                    "message": result.get("message", ""), **e.spec})
    return out
