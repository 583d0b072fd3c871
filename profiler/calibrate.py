"""Calibration: fit the planner's device-memory constants per GPU model from CUDA bursts.

The planner's model of what a process holds on a GPU (`planner.overhead`, `planner.allocator`):

    nvidia-smi = max_memory_reserved + context_bytes
    max_memory_reserved = max_memory_allocated + the allocator model's cached memory, which grows
                          with `working_set` x one layer's saved activation bytes

From each successful CUDA burst: `context_bytes` = NVML process usage (device used during the
burst minus before it) - `max_memory_reserved`, and `working_set` = the fraction that makes the
model's cached memory for the burst's spec equal the measured `max_memory_reserved -
max_memory_allocated` (the model is linear in it; bursts whose spec has no working-memory term,
as with expandable segments, say nothing about it). Per GPU model the median of each is stored
in the JSON file the planner reads, `planner.overhead.calibration_path()`
(`planner/data/calibration.json`, or $MEMFIT_CALIBRATION):

    {"version": 1, "gpus": {"<catalog gpu name>": {"context_bytes": int, "workspace_bytes": int,
      "working_set": float, "device": "<NVML name>", "date": "YYYY-MM-DD", "samples": int,
      "torch": "<version>"}}}

Every entry is checked with `planner.overhead.validate_entry` before anything is written, so the
file is never one the planner would ignore; entries of other GPUs already in a valid file are
kept, and a damaged file is replaced (the result says so).
"""
from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path

from planner.gpus import get_gpu
from planner.overhead import (CALIBRATION_FIELDS, CALIBRATION_VERSION, DEFAULT_OVERHEAD,
                              calibration_path, overhead_for, validate_entry)
from planner.spec import TrainingSpec, spec_fields

__all__ = ["sample_from_record", "working_set_of", "fit_overhead", "write_calibration", "calibrate",
           "calibrate_with_notes", "calibration_status"]

_BOARD = re.compile(r"^cuda(?::\d+)? \((.+)\)$")


def sample_from_record(record: dict) -> dict | None:
    """(board, allocated, reserved, context, spec) from one burst record, or None if it cannot say."""
    if record.get("status") != "ok" or not str(record.get("device", "")).startswith("cuda"):
        return None
    m = record.get("measurement") or {}
    stats, peak = m.get("device_stats", {}), m.get("peak_bytes")
    if not peak or "max_reserved_bytes" not in stats or "process_used_bytes" not in stats:
        return None
    board = _BOARD.match(record["device"])
    return {"board": board.group(1) if board else record["device"],
            "allocated": int(peak), "reserved": int(stats["max_reserved_bytes"]),
            "context": int(stats["process_used_bytes"]) - int(stats["max_reserved_bytes"]),
            "spec": record.get("spec"), "torch": record.get("versions", {}).get("torch", "")}


def working_set_of(spec: dict | None, allocated: int, reserved: int) -> float | None:
    """The working-memory fraction that makes the model's cached bytes for `spec` equal the
    measured `reserved - allocated` (clipped to the valid range), or None when the spec is not
    one the planner can take or the model has no working-memory term for it."""
    from planner.allocator_calibration import cached_bytes
    if not isinstance(spec, dict) or set(spec) - set(spec_fields()):
        return None
    try:
        s = TrainingSpec(**spec)
        zero = cached_bytes(s, replace(DEFAULT_OVERHEAD, working_set=0.0))
        one = cached_bytes(s, replace(DEFAULT_OVERHEAD, working_set=1.0))
    except (ValueError, TypeError):
        return None
    if one <= zero:
        return None
    _, low, high, _ = CALIBRATION_FIELDS["working_set"]
    return min(max((reserved - allocated - zero) / (one - zero), low), high)


def _gpu_name(board: str) -> str:
    try:
        return get_gpu(board).name
    except ValueError:
        return board


def fit_overhead(records: list[dict]) -> dict[str, dict]:
    """Per catalog GPU: the median context and working-memory fraction of its bursts (see the
    module docstring), each entry a valid calibration entry."""
    by_gpu: dict[str, list[dict]] = {}
    for record in records:
        sample = sample_from_record(record)
        if sample:
            by_gpu.setdefault(_gpu_name(sample["board"]), []).append(sample)
    out = {}
    for gpu, samples in by_gpu.items():
        _, low, high, _ = CALIBRATION_FIELDS["context_bytes"]
        context = min(max(int(statistics.median(s["context"] for s in samples)), low), high)
        fractions = [w for s in samples
                     if (w := working_set_of(s["spec"], s["allocated"], s["reserved"])) is not None]
        entry = {"context_bytes": context, "workspace_bytes": DEFAULT_OVERHEAD.workspace_bytes,
                 "working_set": round(statistics.median(fractions), 4) if fractions
                 else DEFAULT_OVERHEAD.working_set,
                 "device": samples[0]["board"], "date": date.today().isoformat(),
                 "samples": len(samples), "torch": samples[0]["torch"] or "unknown"}
        out[gpu] = validate_entry(entry)
    return out


def _existing(target: Path) -> tuple[dict, list[str]]:
    """The valid entries of an existing file, and what was wrong with the rest."""
    if not target.is_file():
        return {}, []
    try:
        data = json.loads(target.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {}, [f"{target} was not a readable calibration file ({err}): replaced"]
    if not isinstance(data, dict) or data.get("version") != CALIBRATION_VERSION \
            or not isinstance(data.get("gpus"), dict):
        return {}, [f"{target} did not have calibration's shape (version {CALIBRATION_VERSION}, "
                    "a \"gpus\" object): replaced"]
    kept, notes = {}, []
    for gpu, entry in data["gpus"].items():
        try:
            kept[gpu] = validate_entry(entry)
        except ValueError as err:
            notes.append(f"entry {gpu} in {target} dropped: {err}")
    return kept, notes


def write_calibration(fitted: dict[str, dict], path: str | os.PathLike | None = None) -> tuple[Path, list[str]]:
    """Merge `fitted` into the calibration file atomically (temp file, then rename); returns the
    path and notes about entries of the old file that were invalid and not kept. Raises
    ValueError, writing nothing, if a fitted entry is not valid."""
    fitted = {gpu: validate_entry(entry) for gpu, entry in fitted.items()}
    target = Path(path) if path else calibration_path()
    kept, notes = _existing(target)
    data = {"version": CALIBRATION_VERSION, "gpus": {**kept, **fitted}}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, target)
    return target, notes


def calibrate(records: list[dict] | None = None, *, history=None, path=None,
              warn: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Fit from `records` (burst records; default: every burst in the history `history`), write
    the file and record a "calibration" entry in that history (`history=False`: none).
    Returns what was fitted ({} when no CUDA burst had the figures: nothing is written);
    `warn(text)` hears why the history could not record the calibration."""
    return calibrate_with_notes(records, history=history, path=path, warn=warn)[0]


def calibrate_with_notes(records: list[dict] | None = None, *, history=None, path=None,
                         warn: Callable[[str], None] | None = None) -> tuple[dict[str, dict], list[str]]:
    """`calibrate`, also returning notes about entries of the old file that were not kept."""
    if records is None:
        from .history import entries
        records = [e.result for e in entries(history or None, kind="burst")] if history is not False else []
    fitted = fit_overhead(records)
    notes: list[str] = []
    if fitted:
        target, notes = write_calibration(fitted, path)
        if history is not False:
            from .history import record_safely
            warning = record_safely("calibration", {"path": str(target), "gpus": fitted, "notes": notes},
                                    device="cuda", status="ok", path=history or None)
            if warning and warn is not None:
                warn(warning)
    return fitted, notes


def calibration_status(gpu: str) -> dict:
    """{"gpu", "calibrated", "source", figures, "problems"}: whether the planner uses measured
    constants, and why a calibration was ignored if it was."""
    g = get_gpu(gpu)
    o = overhead_for(g)
    return {"gpu": g.name, "calibrated": o.calibrated, "source": o.source,
            "context_bytes": o.context_bytes, "workspace_bytes": o.workspace_bytes,
            "working_set": o.working_set, "problems": "; ".join(o.problems)}
