"""NVML (nvidia-ml-py): the memory a GPU reports as used, as nvidia-smi shows it.

Read without touching CUDA, so a child can take a baseline before its CUDA context exists.
`CUDA_VISIBLE_DEVICES` is honoured (indices or GPU-UUIDs) so torch's cuda:i and NVML agree.
"""
from __future__ import annotations

import os

__all__ = ["device_used_bytes", "device_name", "driver_version"]


def _handle(device: str):
    import pynvml
    pynvml.nvmlInit()
    index = int(device.split(":")[1]) if ":" in device else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible:
        entry = visible[index]
        if entry.startswith("GPU-"):
            return pynvml.nvmlDeviceGetHandleByUUID(entry)
        index = int(entry)
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def device_used_bytes(device: str = "cuda:0") -> int | None:
    """Used bytes of the device (all processes), or None without NVML."""
    try:
        import pynvml
        return int(pynvml.nvmlDeviceGetMemoryInfo(_handle(device)).used)
    except Exception:  # noqa: BLE001 - NVML missing, no driver, no such device
        return None


def device_name(device: str = "cuda:0") -> str | None:
    """The board's name as NVML reports it ("NVIDIA H100 80GB HBM3"), or None."""
    try:
        import pynvml
        name = pynvml.nvmlDeviceGetName(_handle(device))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        return None


def driver_version() -> str | None:
    """The NVIDIA driver's version, or None without NVML."""
    try:
        import pynvml
        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # noqa: BLE001
        return None
