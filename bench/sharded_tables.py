"""Per-rank tables, planner vs the real engines on CPU ranks: DDP, FSDP2, DeepSpeed ZeRO-1/2/3.

One launch of N ranks (torchrun, gloo; DeepSpeed with its CPU accelerator) runs every engine on a
small LLaMA whose sizes make padding occur everywhere (hidden 70, vocab 1001), and prints one
markdown table per engine: each rank's weights, gradients (held when the step starts), optimizer
states and the engine's buffers, predicted (`planner.sharding`) and measured, plus each rank's
MemTracker peak per phase.

Run: python bench/sharded_tables.py [--devices 3] [--method adamw] [--precision mixed]
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
    from profiler.distributed.compare import compare_ranks
    records = compare_ranks(result)
    lines = [f"### {result.engine}, {result.spec.method}, {result.spec.precision}, {result.devices} ranks",
             "", "| rank | component | planner | measured | difference |", "|---|---|---|---|---|"]
    lines += [f"| {r['rank']} | {r['component']} | {r['predicted_bytes']:,} | {r['measured_bytes']:,} | "
              f"{r['abs_error']:+,} |" for r in records]
    lines += ["", "| rank | " + " | ".join(f"{p} peak" for p in ("forward", "backward", "optimizer_step")) + " |",
              "|---|---|---|---|"]
    lines += [f"| {m.rank} | " + " | ".join(human_bytes(m.phases.get(p)) for p in ("forward", "backward",
                                                                                 "optimizer_step")) + " |"
              for m in result.ranks]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--method", default="adamw")
    parser.add_argument("--precision", default="mixed")
    args = parser.parse_args()
    from profiler.distributed.burst import run_sharded_many
    path = Path(tempfile.mkdtemp()) / "odd70.json"
    path.write_text(json.dumps(ODD))
    engines = [e for e in ENGINES if not (e.startswith("zero") and args.precision == "bf16")
               and not (e == "ddp" and args.precision == "mixed")]
    specs = [TrainingSpec(model=str(path), method=args.method, precision=args.precision, batch=2, seq=16,
                          rank=None if args.method == "adamw" else 4, devices=args.devices, sharding=e)
             for e in engines]
    options = [{"param_persistence_threshold": 4900} if e == "zero3" else None for e in engines]
    for result in run_sharded_many(specs, steps=1, warmup=1, options=options, history=False):
        print(table(result) if result.ok else f"### {result.engine}: {result.status}: {result.message}")
        print()


if __name__ == "__main__":
    main()
