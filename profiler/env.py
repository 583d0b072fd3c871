"""The software a measurement was taken with: package versions and the device's name."""
from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["PACKAGES", "versions", "device_label"]

PACKAGES = ("memfit", "torch", "transformers", "accelerate", "peft", "bitsandbytes", "nvidia-ml-py",
            "galore-torch", "fira")


def versions() -> dict[str, str]:
    """Installed versions of the packages a measurement depends on (no imports needed), plus
    Python and, when torch is already imported, its CUDA version."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.version, "cuda", None):
        out["cuda"] = torch.version.cuda
    return out


def device_label(device: str) -> str:
    """'cpu (x86_64, 2 threads)' or 'cuda:0 (NVIDIA H100 80GB HBM3)'; imports torch."""
    import torch
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
