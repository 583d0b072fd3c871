"""Per-rank tables, planner vs the real engines on CPU ranks: DDP, FSDP2, DeepSpeed ZeRO-1/2/3,
and their offload modes.

One launch of N ranks (torchrun, gloo; DeepSpeed with its CPU accelerator) runs every engine on a
small LLaMA whose sizes make padding occur everywhere (hidden 70, vocab 1001), and prints one
markdown table per engine and stage: each rank's weights, gradients (held when the step starts),
optimizer states and the engine's buffers, predicted (`estimate(spec)`'s per-device components,
every rank) and measured, plus each rank's MemTracker peak per phase beside the planner's
per-device peak (without the device overhead; DeepSpeed's are not comparable, see
docs/validation.md).

Run: python bench/sharded_tables.py [--devices 3] [--method adamw] [--precision mixed] [--offload]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages
from planner import TrainingSpec  # noqa: E402
from planner.format import human_bytes  # noqa: E402

ODD = {"model_type": "llama", "hidden_size": 70, "intermediate_size": 171, "num_attention_heads": 5,
       "num_key_value_heads": 5, "num_hidden_layers": 2, "vocab_size": 1001, "max_position_embeddings": 256,
       "tie_word_embeddings": False}
ENGINES = ("ddp", "fsdp", "zero1", "zero2", "zero3")


def table(result) -> str:
    """One markdown table: a row per component (each rank's measured bytes, the largest
    planner - measured difference over the ranks), then the MemTracker peaks per phase."""
    from profiler.distributed.compare import compare_ranks, prediction
    records = compare_ranks(result)
    b = prediction(result)
    ranks = sorted({r["rank"] for r in records})
    offload = f", offload {result.spec.offload}" if result.spec.offload != "none" else ""
    head = f"### {result.engine}{offload}, {result.spec.method}, {result.spec.precision}, {result.devices} ranks"
    cols = " | ".join(f"rank {k}" for k in ranks)
    lines = [head, "", f"| component | {cols} | planner − measured |", "|---|" + "---|" * (len(ranks) + 1)]
    for component in dict.fromkeys(r["component"] for r in records):
        cells = {r["rank"]: r for r in records if r["component"] == component}
        worst = max((abs(c["abs_error"]) for c in cells.values()), default=0)
        lines.append(f"| {component} | " + " | ".join(f"{cells[k]['measured_bytes']:,}" for k in ranks)
                     + f" | {worst:,} |")
    over = b.components.overhead
    peaks = " | ".join(human_bytes(max(m.phases.get(p, 0) for p in ("forward", "backward", "optimizer_step")))
                       for m in result.ranks)
    lines.append(f"| MemTracker peak | {peaks} | planner {human_bytes(b.peak_bytes - over)} ({b.peak_phase}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--method", default="adamw")
    parser.add_argument("--precision", default="mixed")
    parser.add_argument("--offload", action="store_true", help="also ZeRO-Offload and FSDP2's CPU offload")
    args = parser.parse_args()
    from profiler.distributed.burst import run_sharded_many
    path = Path(tempfile.mkdtemp()) / "odd70.json"
    path.write_text(json.dumps(ODD))
    engines = [e for e in ENGINES if not (e.startswith("zero") and args.precision == "bf16")
               and not (e == "ddp" and args.precision == "mixed")]
    runs = [(e, "none") for e in engines]
    if args.offload:
        runs += [(e, o) for e, o in (("zero2", "optimizer"), ("zero3", "params"), ("fsdp", "params")) if e in engines]
    specs = [TrainingSpec(model=str(path), method=args.method, precision=args.precision, batch=2, seq=16,
                          rank=None if args.method == "adamw" else 4, devices=args.devices, sharding=e, offload=o)
             for e, o in runs]
    options = [{"param_persistence_threshold": 4900} if e == "zero3" else None for e, _ in runs]
    for result in run_sharded_many(specs, steps=1, warmup=1, options=options, history=False):
        print(table(result) if result.ok else f"### {result.engine}: {result.status}: {result.message}")
        print()


if __name__ == "__main__":
    main()
