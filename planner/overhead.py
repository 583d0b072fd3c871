"""Runtime overhead outside the tensors a training step allocates: named, documented constants.

The defaults are uncalibrated figures for a PyTorch process on one GPU; the profiler fits them per
GPU model from real bursts and writes `data/calibration.json`, which `overhead_for` reads first.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .gpus import MIB, Gpu

__all__ = ["Overhead", "DEFAULT_OVERHEAD", "overhead_for", "overhead_bytes", "calibration_path"]

#: CUDA context of a PyTorch process (driver, kernels' module images with lazy loading). Seen as
#: ~300-600 MiB of nvidia-smi usage on Ampere/Ada/Hopper boards before any tensor is allocated.
CUDA_CONTEXT_BYTES = 450 * MIB
#: cuBLAS workspace: PyTorch's default CUBLAS_WORKSPACE_CONFIG gives 8 MiB before Hopper and
#: 32 MiB on Hopper per handle/stream; one stream assumed.
CUBLAS_WORKSPACE_BYTES = 32 * MIB
#: caching-allocator slack: block rounding (512 B / 2 MiB segments) and fragmentation, as a
#: fraction of the peak of allocated bytes (torch.cuda.max_memory_reserved / max_memory_allocated - 1).
ALLOCATOR_SLACK = 0.05


@dataclass(frozen=True)
class Overhead:
    context_bytes: int
    workspace_bytes: int
    allocator_slack: float
    calibrated: bool = False
    source: str = "default constants (planner/overhead.py)"


DEFAULT_OVERHEAD = Overhead(CUDA_CONTEXT_BYTES, CUBLAS_WORKSPACE_BYTES, ALLOCATOR_SLACK)


_DEFAULT_CALIBRATION = str(Path(__file__).with_name("data") / "calibration.json")


def calibration_path() -> Path:
    """Where calibrated per-GPU figures live (MEMFIT_CALIBRATION overrides)."""
    return Path(os.environ.get("MEMFIT_CALIBRATION") or _DEFAULT_CALIBRATION)


@functools.lru_cache(maxsize=4)
def _calibration(path: str, mtime: float) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def overhead_for(gpu: Gpu | None) -> Overhead:
    """Calibrated figures for this GPU model when the profiler has measured it, else the defaults."""
    path = os.environ.get("MEMFIT_CALIBRATION") or _DEFAULT_CALIBRATION
    if gpu is None or not os.path.isfile(path):
        return DEFAULT_OVERHEAD
    entry = _calibration(path, os.path.getmtime(path)).get("gpus", {}).get(gpu.name)
    if not entry:
        return DEFAULT_OVERHEAD
    return Overhead(int(entry["context_bytes"]), int(entry.get("workspace_bytes", CUBLAS_WORKSPACE_BYTES)),
                    float(entry["allocator_slack"]), True,
                    f"calibrated on {entry.get('device', gpu.name)} ({entry.get('date', 'undated')})")


def overhead_bytes(allocated_peak: int, overhead: Overhead) -> int:
    """Bytes a process holds beyond its allocated peak: context + workspace + allocator slack."""
    return overhead.context_bytes + overhead.workspace_bytes + round(overhead.allocator_slack * allocated_peak)
