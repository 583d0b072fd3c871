"""GPU catalog: capacity in MiB as the vendor tool (nvidia-smi, rocm-smi) reports it.

The one table of GPU capacities (`data/gpus.json`); planner, profiler and app all read it.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .names import normalize, resolve

__all__ = ["DROP_WORDS", "Gpu", "GPU_CATALOG", "gpu_names", "get_gpu", "custom_gpu", "MIB"]

MIB = 1 << 20
_DATA = Path(__file__).with_name("data") / "gpus.json"
# Marketing words users type that never distinguish two boards.
DROP_WORDS = _DROP = ("nvidia", "geforce", "rtx", "amd", "instinct", "tesla", "my", "an", "a", "the")
_CAPACITY = re.compile(r"^\s*(?:custom\s*[:=]?\s*)?(\d+(?:\.\d+)?)\s*(gib|gb|mib|mb)\s*$", re.I)


@dataclass(frozen=True)
class Gpu:
    """A device: catalog name, vendor, total memory in MiB, architecture, and the number formats
    its matrix units run natively (None: not known, as for a custom capacity).

    bf16: NVIDIA compute capability 8.0 and up (Ampere, Ada, Hopper, Blackwell) and AMD CDNA2/3;
    not Turing (T4, 7.5) or Volta (V100, 7.0). fp8: compute capability 8.9 and up (Ada, Hopper,
    Blackwell), AMD CDNA3 (MI300X).
    """
    name: str
    memory_mib: int
    vendor: str = "custom"
    arch: str = ""
    note: str = ""
    bf16: bool | None = None
    fp8: bool | None = None
    compute_capability: str = ""       # NVIDIA "major.minor"; AMD boards name their gfx target

    @property
    def capacity_bytes(self) -> int:
        return self.memory_mib * MIB


@functools.lru_cache(maxsize=1)
def _raw() -> dict[str, dict]:
    return json.loads(_DATA.read_text())


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    index = {}
    for name, entry in _raw().items():
        for alias in [name, *entry.get("aliases", [])]:
            index[normalize(alias, _DROP)] = name
    return index


def gpu_names() -> list[str]:
    return list(_raw())


@functools.lru_cache(maxsize=None)
def _catalog_gpu(name: str) -> Gpu:
    e = _raw()[name]
    return Gpu(name, e["memory_mib"], e["vendor"], e["arch"], e.get("note", ""), e["bf16"], e["fp8"],
               e.get("compute_capability") or e.get("gfx", ""))


GPU_CATALOG = {name: _catalog_gpu(name) for name in gpu_names()}


def custom_gpu(memory_mib: int, name: str | None = None) -> Gpu:
    """A device of any capacity (e.g. a partitioned MIG slice or a card not in the catalog)."""
    if isinstance(memory_mib, bool) or not isinstance(memory_mib, int) or memory_mib <= 0:
        raise ValueError(f"GPU memory must be a positive number of MiB, got {memory_mib!r}")
    return Gpu(name or f"{memory_mib} MiB", memory_mib)


def get_gpu(query: str) -> Gpu:
    """A GPU by forgiving name ("4090", "A100 80GB", "NVIDIA H100 80GB HBM3") or a capacity
    ("24GB", "24 GiB", "23028 MiB", "custom:16GB"; GB and GiB are both read as GiB, as the tools print)."""
    match = _CAPACITY.match(str(query))
    if match:
        value, unit = float(match.group(1)), match.group(2).lower()
        return custom_gpu(round(value * (1024 if unit in ("gb", "gib") else 1)))
    return _catalog_gpu(resolve(query, _index(), "gpu", gpu_names(), _DROP))
