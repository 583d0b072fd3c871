"""Imported once by the profiler's fork server so that each child starts with torch,
transformers and the optimizer libraries already loaded (a fork instead of a 4-5 s import).
Nothing here initialises CUDA: a forked child may still pick its device freely."""
import contextlib
import importlib
import io

with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
    for _name in ("torch", "transformers", "transformers.models.llama.modeling_llama", "accelerate",
                  "peft", "bitsandbytes", "lowrank", "profiler.build", "profiler.burst"):
        try:
            importlib.import_module(_name)
        except Exception:  # noqa: BLE001 - a missing optional library is reported by the run itself
            pass
