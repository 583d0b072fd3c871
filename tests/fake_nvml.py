"""A stand-in for `pynvml` describing one RTX 4090 with two processes (no GPU needed)."""
from __future__ import annotations

from types import SimpleNamespace

GIB = 1 << 30
TOTAL = 24564 << 20                       # what nvidia-smi reports for an RTX 4090
USED = 5 * GIB
PROCESSES = [SimpleNamespace(pid=4242, usedGpuMemory=3 * GIB), SimpleNamespace(pid=77, usedGpuMemory=None)]


class FakeNvml:
    """Module-shaped: the functions `ui.gpu_info.read_gpus` calls, with fixed answers."""

    def __init__(self, name: str = "NVIDIA GeForce RTX 4090", total: int = TOTAL):
        self.name, self.total, self.calls = name, total, []

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return b"580.82.07"

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetName(self, handle):
        return self.name

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=self.total, used=USED, free=self.total - USED)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return PROCESSES

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    def nvmlSystemGetProcessName(self, pid):
        if pid == 77:
            raise RuntimeError("NVML_ERROR_NO_PERMISSION")
        return b"python train.py"


class NoDriver:
    """`pynvml` on a machine without the NVIDIA driver."""

    def nvmlInit(self):
        raise RuntimeError("NVML Shared Library Not Found")
