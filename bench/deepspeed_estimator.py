"""DeepSpeed's own model-state estimators beside memfit's final per-device plan (`estimate(spec)`),
for a 7B and a 70B model, with each difference named.

DeepSpeed (0.19.8) ships `estimate_zero2_model_states_mem_needs` (runtime/zero/stage_1_and_2.py)
and `estimate_zero3_model_states_mem_needs` (runtime/zero/stage3.py), the functions behind the
`*_all_live` / `*_all_cold` helpers. Without offload they say, per GPU, for P parameters on N GPUs:

    ZeRO-2: 2P + 18P/N      (2 bf16 weights; 18 = 2 bf16 grads + 4 fp32 grads + 4 fp32 master + 8 Adam)
    ZeRO-3: 4L + 18P/N      (L: the largest layer's parameters, gathered with its gradient)

memfit's plan (`estimate(spec)` with `--devices N --sharding zero2|zero3 --precision mixed`: the
held bytes equal the real engines' on CPU ranks to the byte, tests/profiler/test_distributed.py)
is the peak of a whole step on one device. Beside DeepSpeed's figure it:

1. holds, through forward and backward, ZeRO-2's flat bf16 group (2P', P' = P padded to 2N),
   the fp32 master and moments of the partition (12P'/N) and the bf16 gradients of every
   parameter overlapping the partition (about 2P/N plus one whole parameter); ZeRO-3's bf16
   partitions (2P/N), the persistent small parameters whole, master, moments and a bf16 gradient
   partition (14P/N): "held" below, less than DeepSpeed's figure because
2. the fp32 gradient partition (4P/N) exists only in the optimizer step
   (`single_partition_of_fp32_groups[i].grad`; ZeRO-3 per sub-group of at most 1e9 elements),
   where memfit adds it;
3. adds what the step allocates on top: foreach AdamW's sqrt(exp_avg_sq) of the partition (4P/N,
   the torch optimizer DeepSpeed steps; DeepSpeed's estimate has no temporaries);
4. adds DeepSpeed's reduce bucket, 5e8 elements in bf16 (954 MiB) whatever the model: through
   backward under ZeRO-2, the whole run under ZeRO-3;
5. replaces ZeRO-3's 4L by the gathered window of DeepSpeed's coordinator
   (`planner.zero3_window`: the prefetch bucket of 5e7, parameters kept for reuse within
   `stage3_max_reuse_distance` 1e9, the submodule's full gradient): at the turn from forward
   to backward the last layers stay gathered, more than one layer;
6. adds the micro-batch's activations (batch 1, sequence 512 here: DeepSpeed counts none) and
   the caching allocator's reserved memory and the CUDA context (`planner.device_memory`).

Run: DS_ACCELERATOR=cpu python bench/deepspeed_estimator.py [--format table|csv] [--devices 8,64]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages
from planner import TrainingSpec, estimate  # noqa: E402
from planner.format import human_bytes, render  # noqa: E402

MODELS = ("llama-2-7b", "llama-2-70b")
DEVICES = (8, 64)
GPUS_PER_NODE = 8
HELD = ("weights", "gradients", "optimizer_states")


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


def _largest_layer(b) -> int:
    """DeepSpeed's L: the largest module's parameters (its helper takes the largest layer)."""
    from planner.resolve import resolve_spec
    return max(p.numel for p in resolve_spec(b.spec).model.params)


def row(model: str, engine: str, n: int) -> dict:
    b = estimate(TrainingSpec(model=model, method="adamw", precision="mixed", devices=n, sharding=engine))
    ds = deepspeed_estimates(b.n_params, _largest_layer(b), n)[engine]
    held = sum(getattr(b.sizes, c) for c in HELD)
    tensors = b.peak_bytes - b.components.overhead
    return {"model": model, "devices": n, "engine": engine, "deepspeed_bytes": ds, "memfit_held_bytes": held,
            "memfit_peak_phase": b.peak_phase, "memfit_tensor_peak_bytes": tensors,
            "memfit_device_peak_bytes": b.peak_bytes, "activations_bytes": b.components.activations,
            "temporaries_bytes": b.components.temporaries, "overhead_bytes": b.components.overhead,
            **{f"engine_{k.replace(' ', '_')}_bytes": v for k, v in b.engine_at_peak.items()},
            "tensor_peak_over_deepspeed": tensors / ds}


def rows(models=MODELS, devices=DEVICES) -> list[dict]:
    return [row(m, e, n) for m in models for n in devices for e in ("zero2", "zero3")]


def _added(r: dict) -> str:
    parts = [f"{k[7:-6].replace('_', ' ')} {human_bytes(v)}" for k, v in r.items() if k.startswith("engine_")]
    parts += [f"{name} {human_bytes(r[key])}" for name, key in (("activations", "activations_bytes"),
                                                                ("step temporaries", "temporaries_bytes")) if r[key]]
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", default="table", choices=["table", "csv", "markdown"])
    parser.add_argument("--devices", default=",".join(map(str, DEVICES)))
    args = parser.parse_args()
    records = rows(devices=[int(x) for x in args.devices.split(",")])
    if args.format == "csv":
        print(render(records, "csv"))
        return
    shown = [{"model": r["model"], "GPUs": r["devices"], "engine": r["engine"],
              "DeepSpeed": human_bytes(r["deepspeed_bytes"]), "memfit held": human_bytes(r["memfit_held_bytes"]),
              "memfit tensor peak": f"{human_bytes(r['memfit_tensor_peak_bytes'])} ({r['memfit_peak_phase']})",
              "memfit device peak": human_bytes(r["memfit_device_peak_bytes"]),
              "peak/DS": f"{r['tensor_peak_over_deepspeed']:.3f}", "at memfit's peak, beyond the held": _added(r)}
             for r in records]
    if args.format == "markdown":
        cols = list(shown[0])
        print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        print("\n".join("| " + " | ".join(str(s[c]) for c in cols) + " |" for s in shown))
        return
    print(render(shown, "table"))
    print("\nmemfit held: weights + gradients + optimizer states one device holds through forward and backward;"
          "\ntensor peak: the step's peak without the allocator's cache and the CUDA context (device peak);"
          "\nthe last column names what memfit has at its peak beyond the held bytes. See the docstring.")


if __name__ == "__main__":
    main()
