"""Device memory outside the tensors a step allocates: named constants, and per-GPU calibrated
figures read (and validated) from a calibration file.

The caching allocator's reserved memory is modelled in `planner.allocator` from the step's
workload; what remains here are the constants it needs:

* the CUDA context and everything else a process holds outside PyTorch's allocator (nvidia-smi's
  process usage minus `torch.cuda.max_memory_reserved`);
* the cuBLAS workspace, which PyTorch allocates through its caching allocator (so it is part of
  the allocated and reserved figures);
* the working-memory fraction of the allocator workload (`planner.device_memory`).

`python -m profiler calibrate` fits them per GPU model from real bursts and writes
`data/calibration.json` (or `$MEMFIT_CALIBRATION`), which `overhead_for` reads first. A file or an
entry that does not validate is ignored, the defaults are used, and the result says why.
"""
from __future__ import annotations

import datetime
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .gpus import MIB, Gpu

__all__ = ["Overhead", "DEFAULT_OVERHEAD", "CALIBRATION_VERSION", "CALIBRATION_FIELDS",
           "overhead_for", "calibration_path", "validate_entry", "read_calibration"]

#: CUDA context and everything else a process holds outside PyTorch's allocator (nvidia-smi's
#: process memory minus `max_memory_reserved`). Fitted with WORKING_SET on the published A100-80GB
#: runs of planner/data/allocator_calibration.json (torch 2.4, CUDA 12, flash-attn 2, one GPU,
#: nvidia-smi minus the pre-run baseline): an effective figure that also absorbs what the
#: allocator model misses there. axolotl's logs of the same quantity ("+x GB misc") show
#: 1.0-1.3 GB on other set-ups, so about 0.1-0.3 GB of this is allocator-model error; `python -m
#: profiler calibrate` measures it per GPU (refit with `python bench/allocator_table.py`).
CUDA_CONTEXT_BYTES = 1375 * MIB
#: cuBLAS workspace per handle and stream (aten/src/ATen/cuda/CublasHandlePool.cpp: allocated
#: through the caching allocator; CUBLAS_WORKSPACE_CONFIG's default :4096:8 on Hopper, 32 MiB).
CUBLAS_WORKSPACE_BYTES = 32 * MIB
#: working memory of one layer in forward and in backward, as a fraction of the layer's saved
#: bytes (planner.device_memory); fitted with CUDA_CONTEXT_BYTES on the published runs.
WORKING_SET = 0.8

CALIBRATION_VERSION = 1
#: a calibration file holds one small entry per GPU model; anything larger is not one.
MAX_CALIBRATION_BYTES = 1 << 20
_GIB = 1 << 30
#: field -> (type, lower, upper, what it is); the ranges are physical limits, wide on purpose.
CALIBRATION_FIELDS = {
    "context_bytes": (int, 0, 8 * _GIB, "a whole number of bytes from 0 to 8 GiB"),
    "workspace_bytes": (int, 0, _GIB, "a whole number of bytes from 0 to 1 GiB"),
    "working_set": (float, 0.0, 4.0, "a number from 0 to 4"),
    "samples": (int, 1, 10 ** 9, "a whole number of bursts, at least 1"),
    "device": (str, None, None, "the board's name as text"),
    "torch": (str, None, None, "the torch version as text"),
    "date": (str, None, None, "a date as YYYY-MM-DD"),
}
_REQUIRED = ("context_bytes",)
#: fields older memfit versions wrote that are no longer used (read and ignored).
_OBSOLETE = {"allocator_slack": "the allocator's slack is modelled now"}


@dataclass(frozen=True)
class Overhead:
    context_bytes: int
    workspace_bytes: int
    working_set: float
    calibrated: bool = False
    source: str = "default constants (planner/overhead.py)"
    problems: tuple[str, ...] = ()


DEFAULT_OVERHEAD = Overhead(CUDA_CONTEXT_BYTES, CUBLAS_WORKSPACE_BYTES, WORKING_SET)

_DEFAULT_CALIBRATION = str(Path(__file__).with_name("data") / "calibration.json")


def calibration_path() -> Path:
    """Where calibrated per-GPU figures live (MEMFIT_CALIBRATION overrides)."""
    return Path(os.environ.get("MEMFIT_CALIBRATION") or _DEFAULT_CALIBRATION)


def _field_problem(key: str, value) -> str | None:
    kind, low, high, what = CALIBRATION_FIELDS[key]
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            return f"field {key} must be {what}, got {value!r}"
        if key == "date":
            try:
                datetime.date.fromisoformat(value)
            except ValueError:
                return f"field {key} must be {what}, got {value!r}"
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and not isinstance(value, int):
        number = False
    if not number or not math.isfinite(value) or not low <= value <= high:
        return f"field {key} must be {what}, got {value!r}"
    return None


def validate_entry(entry) -> dict:
    """The entry's figures if it is a valid calibration entry; otherwise a ValueError saying
    which field is wrong and what it must be."""
    if not isinstance(entry, dict):
        raise ValueError(f"an entry must be an object of fields, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(CALIBRATION_FIELDS) - set(_OBSOLETE))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]} (calibration fields: "
                         f"{', '.join(CALIBRATION_FIELDS)})")
    for key in _REQUIRED:
        if key not in entry:
            raise ValueError(f"field {key} is missing")
    for key, value in entry.items():
        problem = _field_problem(key, value) if key in CALIBRATION_FIELDS else None
        if problem:
            raise ValueError(problem)
    return {k: v for k, v in entry.items() if k in CALIBRATION_FIELDS}


def _entries(data) -> dict:
    """The file's `gpus` object, or a ValueError when the file's shape is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"it must hold a JSON object, not {type(data).__name__}")
    if data.get("version") != CALIBRATION_VERSION:
        raise ValueError(f"its version must be {CALIBRATION_VERSION}, got {data.get('version')!r}")
    gpus = data.get("gpus")
    if not isinstance(gpus, dict):
        raise ValueError("it must have a \"gpus\" object (GPU name -> figures)")
    return gpus


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> tuple[dict, str | None]:
    """(gpus object, problem with the whole file or None)."""
    try:
        data = json.loads(Path(path).read_text())
        return _entries(data), None
    except OSError as err:
        return {}, f"it cannot be read ({err.strerror or err})"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return {}, f"it is not valid JSON ({err})"
    except ValueError as err:
        return {}, str(err)


def read_calibration(path: str | os.PathLike | None = None) -> tuple[dict, str | None]:
    """The calibration file's raw `gpus` entries and the problem with the file, if any (a missing
    file is no problem: there is simply nothing calibrated)."""
    path = str(path or calibration_path())
    if not os.path.exists(path):
        return {}, None
    if not os.path.isfile(path):
        return {}, "it is not a file"
    if os.path.getsize(path) > MAX_CALIBRATION_BYTES:
        return {}, f"it is larger than {MAX_CALIBRATION_BYTES // MIB} MiB (a calibration holds a few entries)"
    return _read(path, os.path.getmtime(path))


def overhead_for(gpu: Gpu | None) -> Overhead:
    """Calibrated figures for this GPU model when the profiler has measured it, else the defaults
    (with the reason when a calibration file or entry was ignored)."""
    if gpu is None:
        return DEFAULT_OVERHEAD
    path = calibration_path()
    gpus, problem = read_calibration(path)
    if problem:
        return _ignored(f"calibration file {path} ignored: {problem}")
    entry = gpus.get(gpu.name)
    if entry is None:
        return DEFAULT_OVERHEAD
    try:
        figures = validate_entry(entry)
    except ValueError as err:
        return _ignored(f"calibration of {gpu.name} in {path} ignored: {err}")
    notes = tuple(f"calibration of {gpu.name} in {path}: {key} ignored ({why})"
                  for key, why in _OBSOLETE.items() if key in entry)
    return Overhead(figures["context_bytes"], figures.get("workspace_bytes", CUBLAS_WORKSPACE_BYTES),
                    float(figures.get("working_set", WORKING_SET)), True,
                    f"calibrated on {figures.get('device', gpu.name)} ({figures.get('date', 'undated')})",
                    notes)


def _ignored(problem: str) -> Overhead:
    return Overhead(CUDA_CONTEXT_BYTES, CUBLAS_WORKSPACE_BYTES, WORKING_SET, False,
                    f"{DEFAULT_OVERHEAD.source}; {problem}", (problem,))
