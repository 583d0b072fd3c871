"""What NVML says about this machine's NVIDIA GPUs, as plain data (no Streamlit here).

`read_gpus()` never raises: with no NVIDIA driver or GPU it returns a reading whose `error` says so,
which is the path that runs on CPU-only machines. Tests pass a fake `nvml` module for the other path.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

__all__ = ["GpuProcess", "LocalGpu", "NvmlReading", "read_gpus", "local_gpu"]


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_bytes: int | None          # None when the driver does not say (e.g. under WDDM or MIG)


@dataclass(frozen=True)
class LocalGpu:
    index: int
    name: str                       # as NVML reports it, e.g. "NVIDIA GeForce RTX 4090"
    total_bytes: int
    used_bytes: int
    free_bytes: int
    processes: tuple[GpuProcess, ...]
    catalog: str | None             # the planner's catalog name for this board, if it has one

    @property
    def spec_gpu(self) -> str:
        """What a TrainingSpec's `gpu` should say: the catalog name, else the exact capacity."""
        return self.catalog or f"{self.total_bytes >> 20} MiB"


@dataclass(frozen=True)
class NvmlReading:
    gpus: tuple[LocalGpu, ...] = ()
    driver: str | None = None
    error: str | None = None        # why there is nothing to show


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _catalog_name(nvml_name: str) -> str | None:
    from planner import get_gpu
    try:
        return get_gpu(nvml_name).name
    except ValueError:
        return None


def _processes(nvml: ModuleType, handle) -> tuple[GpuProcess, ...]:
    procs = []
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            running = getattr(nvml, getter)(handle)
        except Exception:           # not supported on this board/driver: show none
            continue
        for p in running:
            try:
                name = _text(nvml.nvmlSystemGetProcessName(p.pid))
            except Exception:
                name = f"pid {p.pid}"
            used = getattr(p, "usedGpuMemory", None)
            procs.append(GpuProcess(int(p.pid), name, int(used) if isinstance(used, int) else None))
    return tuple({p.pid: p for p in procs}.values())


def _device(nvml: ModuleType, index: int) -> LocalGpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    return LocalGpu(index, name, int(mem.total), int(mem.used), int(mem.free),
                    _processes(nvml, handle), _catalog_name(name))


def read_gpus(nvml: ModuleType | None = None) -> NvmlReading:
    """Every NVIDIA GPU NVML sees, with memory and processes; an `error` instead when there is none."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return NvmlReading(error="nvidia-ml-py (pynvml) is not installed")
    try:
        nvml.nvmlInit()
    except Exception as err:        # NVMLError_LibraryNotFound / DriverNotLoaded on CPU-only machines
        return NvmlReading(error=f"NVML found no NVIDIA driver ({err})")
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = tuple(_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount()))
        return NvmlReading(gpus, driver, None if gpus else "the NVIDIA driver reports no GPU")
    except Exception as err:
        return NvmlReading(error=f"NVML could not read the GPUs ({err})")
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def local_gpu(nvml: ModuleType | None = None) -> str | None:
    """The first local GPU as a spec value (catalog name or capacity), or None without one."""
    reading = read_gpus(nvml)
    return reading.gpus[0].spec_gpu if reading.gpus else None
