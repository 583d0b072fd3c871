"""DeepSpeed's own model-state estimators beside memfit's per-device plan, for a 7B and a 70B model.

DeepSpeed (0.19.8) ships `estimate_zero2_model_states_mem_needs` (runtime/zero/stage_1_and_2.py)
and `estimate_zero3_model_states_mem_needs` (runtime/zero/stage3.py), the functions behind the
`*_all_live` / `*_all_cold` helpers. Without offload they say, per GPU, for P parameters on N GPUs:

    ZeRO-2: 2P + 18P/N      (2 bf16 weights; 18 = 2 bf16 grads + 4 fp32 grads + 4 fp32 master + 8 Adam)
    ZeRO-3: 4L + 18P/N      (L: the largest layer's parameters, gathered)

memfit's plan (`planner.sharding.device_memory`, checked to the byte against the real engines on
CPU: tests/profiler/test_distributed.py) holds, per device, with mixed precision:

    ZeRO-2: 2P' weights (the flat bf16 group, P' = P padded to a multiple of 2N)
            + 4P'/N fp32 master + 8P'/N moments (+4 B step) + the bf16 gradients of every parameter
            overlapping the rank's partition (about 2P/N, plus up to one whole parameter)
    ZeRO-3: 2 Σ ceil(p/N) bf16 partitions + the persistent small parameters whole
            (numel <= 1e5: the norms) + 4 master + 8 moments + 2 gradient partition, per element
and, beside them, what DeepSpeed's estimate leaves out or counts differently:
    - the reduce bucket: `reduce_bucket_size` = 5e8 elements in the model dtype (954 MiB in bf16),
      alive through backward (ZeRO-1/2) or the whole run (ZeRO-3), whatever the model size;
    - the fp32 gradient partition (4P/N): DeepSpeed counts it as held; in the engine it exists only
      during the optimizer step (`single_partition_of_fp32_groups[i].grad`), so memfit puts it in
      the step phase, not in the state held through forward and backward;
    - ZeRO-3's gathered layer: DeepSpeed reserves 4L (fp32-sized) for it; the engine gathers
      bf16 parameters module by module within `stage3_prefetch_bucket_size` (5e7) and
      `stage3_max_live_parameters` (1e9), which this phase-1 plan does not size yet.
Neither counts activations; memfit's estimate adds them (planner.activations) once wired in.

Run: DS_ACCELERATOR=cpu python bench/deepspeed_estimator.py [--format table|csv]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages
from planner import TrainingSpec  # noqa: E402
from planner.format import human_bytes, render  # noqa: E402
from planner.resolve import resolve_spec  # noqa: E402
from planner.sharding import device_memory  # noqa: E402

MODELS = ("llama-2-7b", "llama-2-70b")
DEVICES = (1, 2, 4, 8, 16, 64)
GPUS_PER_NODE = 8


def deepspeed_estimates(total: int, largest: int, devices: int) -> dict[str, int]:
    """DeepSpeed's GPU bytes per device for ZeRO-2 and ZeRO-3 without offload (its own functions)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    nodes = max(1, devices // GPUS_PER_NODE)
    per_node = min(devices, GPUS_PER_NODE)
    _, z2 = estimate_zero2_model_states_mem_needs(total, per_node, nodes, cpu_offload=False)
    _, z3, _ = estimate_zero3_model_states_mem_needs(total, largest, per_node, nodes, cpu_offload=False,
                                                     cpu_offload_params=False)
    return {"zero2": z2, "zero3": z3}


def rows(models=MODELS, devices=DEVICES) -> list[dict]:
    out = []
    for model in models:
        r = resolve_spec(TrainingSpec(model=model, method="adamw", precision="mixed"))
        total = r.model.n_params
        largest = max(p.numel for p in r.model.params)
        for n in devices:
            ds = deepspeed_estimates(total, largest, n)
            for engine in ("zero2", "zero3"):
                plan = device_memory(r, engine, n)
                held = plan.worst.memory
                states = held.weights + held.gradients + held.optimizer_states
                bucket = plan.buffers.get("reduce_bucket") or plan.phase_extra["backward"]["reduce_bucket"]
                step = plan.phase_extra["optimizer_step"]["fp32_gradient_partition"]
                out.append({"model": model, "devices": n, "engine": engine, "deepspeed_bytes": ds[engine],
                            "memfit_held_bytes": states, "memfit_step_bytes": states + step,
                            "reduce_bucket_bytes": bucket, "ratio_held": states / ds[engine],
                            "ratio_step": (states + step) / ds[engine]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", default="table", choices=["table", "csv"])
    args = parser.parse_args()
    records = rows()
    if args.format == "csv":
        print(render(records, "csv"))
        return
    shown = [{"model": r["model"], "GPUs": r["devices"], "engine": r["engine"],
              "DeepSpeed": human_bytes(r["deepspeed_bytes"]), "memfit held": human_bytes(r["memfit_held_bytes"]),
              "memfit at step": human_bytes(r["memfit_step_bytes"]), "+ reduce bucket": human_bytes(r["reduce_bucket_bytes"]),
              "held/DS": f"{r['ratio_held']:.3f}", "step/DS": f"{r['ratio_step']:.3f}"} for r in records]
    print(render(shown, "table"))
    print("\nmemfit held: weights + gradients + optimizer states a device holds through forward and backward;"
          "\nmemfit at step: plus the fp32 gradient partition DeepSpeed makes for the optimizer step"
          "\n(DeepSpeed's estimate counts it as held). The reduce bucket comes on top of either; DeepSpeed's"
          "\nestimate leaves it out. See this file's docstring for every difference.")


if __name__ == "__main__":
    main()
