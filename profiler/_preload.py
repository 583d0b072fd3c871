"""Imported once by the profiler's fork server so that each child starts with torch,
transformers and the optimizer libraries already loaded (a fork instead of a 4-5 s import).

Nothing here may initialise CUDA, or no forked child could use it: bitsandbytes queries the
device's compute capability when imported (and peft imports bitsandbytes), so those two are
preloaded only by a CPU-only build of torch. CUDA bursts start by spawning anyway."""
import contextlib
import importlib
import io

_ALWAYS = ("torch", "transformers", "transformers.models.llama.modeling_llama", "accelerate", "lowrank",
           "profiler.build", "profiler.burst", "profiler.runner")
_CPU_BUILD_ONLY = ("bitsandbytes", "peft")

with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
    for _name in _ALWAYS:
        try:
            importlib.import_module(_name)
        except Exception:  # noqa: BLE001 - a missing optional library is reported by the run itself
            pass
    import torch
    if torch.version.cuda is None:
        for _name in _CPU_BUILD_ONLY:
            try:
                importlib.import_module(_name)
            except Exception:  # noqa: BLE001
                pass
