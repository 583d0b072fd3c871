"""Calibration: fit the planner's runtime-overhead constants per GPU model from CUDA bursts.

The planner's model of what a process holds on a GPU (`planner.overhead`):

    device used = allocated peak · (1 + allocator_slack) + context_bytes + workspace_bytes

From each successful CUDA burst: `allocator_slack` = max_memory_reserved / max_memory_allocated
- 1, and `context_bytes + workspace_bytes` = NVML process usage (device used during the burst
minus before it) - max_memory_reserved. Per GPU model the median of each is stored (the workspace
keeps the planner's default, the context takes the rest) in the JSON file the planner reads,
`planner.overhead.calibration_path()` (`planner/data/calibration.json`, or $MEMFIT_CALIBRATION):

    {"version": 1, "gpus": {"<catalog gpu name>": {"context_bytes": int, "workspace_bytes": int,
      "allocator_slack": float, "device": "<NVML name>", "date": "YYYY-MM-DD", "samples": int,
      "torch": "<version>"}}}
"""
from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

from planner.gpus import get_gpu
from planner.overhead import DEFAULT_OVERHEAD, calibration_path, overhead_for

__all__ = ["sample_from_record", "fit_overhead", "write_calibration", "calibrate", "calibration_status"]

_BOARD = re.compile(r"^cuda(?::\d+)? \((.+)\)$")


def sample_from_record(record: dict) -> dict | None:
    """(board, slack, context+workspace bytes) from one burst record, or None if it cannot say."""
    if record.get("status") != "ok" or not str(record.get("device", "")).startswith("cuda"):
        return None
    m = record.get("measurement") or {}
    stats, peak = m.get("device_stats", {}), m.get("peak_bytes")
    if not peak or "max_reserved_bytes" not in stats or "process_used_bytes" not in stats:
        return None
    board = _BOARD.match(record["device"])
    return {"board": board.group(1) if board else record["device"],
            "slack": stats["max_reserved_bytes"] / peak - 1,
            "fixed": stats["process_used_bytes"] - stats["max_reserved_bytes"],
            "torch": record.get("versions", {}).get("torch", "")}


def _gpu_name(board: str) -> str:
    try:
        return get_gpu(board).name
    except ValueError:
        return board


def fit_overhead(records: list[dict]) -> dict[str, dict]:
    """Per catalog GPU: the median slack and fixed bytes of its bursts (see module docstring)."""
    by_gpu: dict[str, list[dict]] = {}
    for record in records:
        sample = sample_from_record(record)
        if sample:
            by_gpu.setdefault(_gpu_name(sample["board"]), []).append(sample)
    out = {}
    for gpu, samples in by_gpu.items():
        fixed = int(statistics.median(s["fixed"] for s in samples))
        workspace = DEFAULT_OVERHEAD.workspace_bytes
        out[gpu] = {"context_bytes": max(0, fixed - workspace), "workspace_bytes": workspace,
                    "allocator_slack": round(max(0.0, statistics.median(s["slack"] for s in samples)), 4),
                    "device": samples[0]["board"], "date": date.today().isoformat(),
                    "samples": len(samples), "torch": samples[0]["torch"]}
    return out


def write_calibration(fitted: dict[str, dict], path: str | os.PathLike | None = None) -> Path:
    """Merge `fitted` into the calibration file atomically (temp file, then rename)."""
    target = Path(path) if path else calibration_path()
    data = {"version": 1, "gpus": {}}
    if target.is_file():
        try:
            data = {**data, **json.loads(target.read_text())}
        except json.JSONDecodeError:
            pass
    data["gpus"] = {**data.get("gpus", {}), **fitted}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, target)
    return target


def calibrate(records: list[dict] | None = None, *, history=None, path=None,
              warn: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Fit from `records` (burst records; default: every burst in the history `history`), write
    the file and record a "calibration" entry in that history (`history=False`: none).
    Returns what was fitted ({} when no CUDA burst had the figures: nothing is written);
    `warn(text)` hears why the history could not record the calibration."""
    if records is None:
        from .history import entries
        records = [e.result for e in entries(history or None, kind="burst")] if history is not False else []
    fitted = fit_overhead(records)
    if fitted:
        target = write_calibration(fitted, path)
        if history is not False:
            from .history import record_safely
            warning = record_safely("calibration", {"path": str(target), "gpus": fitted}, device="cuda",
                                    status="ok", path=history or None)
            if warning and warn is not None:
                warn(warning)
    return fitted


def calibration_status(gpu: str) -> dict:
    """{"gpu", "calibrated", "source", figures}: whether the planner uses measured constants."""
    g = get_gpu(gpu)
    o = overhead_for(g)
    return {"gpu": g.name, "calibrated": o.calibrated, "source": o.source,
            "context_bytes": o.context_bytes, "workspace_bytes": o.workspace_bytes,
            "allocator_slack": o.allocator_slack}
