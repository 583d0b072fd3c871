"""Markdown tables of predicted vs measured, as kept in docs/validation.md.

    python bench/profiler_tables.py cpu      # bursts of every method on the tests' tiny LLaMA (CPU)
    python bench/profiler_tables.py trace    # llama-7b traced for every method
    python bench/profiler_tables.py adapters # LoRA options and the adapter methods' own (tiny LLaMA, CPU)
    python bench/profiler_tables.py validate FILE.json   # a `python -m profiler validate --format json` file

Every number comes from a run made by this script (or the given file); nothing is typed in.
"""
from __future__ import annotations

import json
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages

from planner import METHOD_IDS, METHODS, TrainingSpec, estimate
from planner.format import human_bytes
from profiler import compare, run_burst, trace
from profiler.env import versions

COLUMNS = ("weights", "gradients", "optimizer_states", "projection", "adapters", "activations", "peak")
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
        "num_key_value_heads": 4, "num_hidden_layers": 2, "vocab_size": 1000,
        "max_position_embeddings": 256, "tie_word_embeddings": False}


def _cell(row: dict) -> str:
    """'exact' when equal, 'measured +n B' for a difference under 1 KiB, else 'measured (±x.x %)'
    with the prediction's relative error."""
    if row["predicted_bytes"] == row["measured_bytes"]:
        return "exact" if row["measured_bytes"] else "0"
    diff = row["measured_bytes"] - row["predicted_bytes"]      # validate's records carry no abs_error
    if abs(diff) < 1024:
        return f"measured {diff:+d} B"
    err = row["relative_error"]
    return f"{human_bytes(row['measured_bytes'])} ({100 * err:+.1f} %)" if err is not None else "n/a"


def table(records: list[dict], title: str) -> str:
    by_method: dict[str, dict] = {}
    for r in records:
        by_method.setdefault(r["method"], {})[r["component"]] = r
    head = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines = []
    for method, rows in by_method.items():
        if None in rows:
            lines.append(f"| {method} | " + rows[None]["message"] + " |" + " |" * (len(COLUMNS) - 1))
            continue
        lines.append(f"| {method} | " + " | ".join(_cell(rows[c]) if c in rows else "-" for c in COLUMNS) + " |")
    return "\n".join([f"#### {title}", "", *head, *lines, ""])


def _spec(config: str, method: str, precision: str) -> TrainingSpec:
    m = METHODS[method]
    return TrainingSpec(model=config, method=method, rank=8 if "rank" in m.options else None,
                        update_proj_gap=2 if "update_proj_gap" in m.options else None, batch=2, seq=32,
                        precision="bf16" if method == "qlora" else precision)


def cpu_records(precision: str) -> list[dict]:
    config = Path(tempfile.mkdtemp()) / "tiny_llama.json"
    config.write_text(json.dumps(TINY))
    out = []
    for method in METHOD_IDS:
        spec = _spec(str(config), method, precision)
        result = run_burst(spec, steps=2, warmup=1, history=False)
        if not result.ok:
            out.append({"method": method, "component": None, "message": result.message})
            continue
        out += compare(estimate(spec), result.measurement).to_records()
    return out


def adapter_records() -> list[dict]:
    """`profiler.validation.ADAPTER_CASES` as bursts, compared with the CPU kernels' sizes (dropout
    noise in D); the row name is the case."""
    from profiler.validation import ADAPTER_CASES, adapter_case_spec
    config = Path(tempfile.mkdtemp()) / "tiny_llama.json"
    config.write_text(json.dumps(TINY))
    out = []
    for case in ADAPTER_CASES:
        spec = adapter_case_spec(str(config), case)
        result = run_burst(spec, steps=2, warmup=1, history=False)
        if not result.ok:
            out.append({"method": case, "component": None, "message": result.message})
            continue
        out += [{**r, "method": case} for r in compare(estimate(spec, kernels="cpu"), result.measurement).to_records()]
    return out


def trace_records() -> list[dict]:
    out = []
    for method in METHOD_IDS:
        spec = TrainingSpec(model="llama-7b", method=method)
        result = trace(spec, history=False)
        if not result.ok:
            out.append({"method": method, "component": None, "message": result.message})
            continue
        out += compare(estimate(spec), result.measurement, mode="trace").to_records()
    return out


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "cpu"
    v = versions()
    stamp = f"{date.today().isoformat()}, torch {v['torch']}, transformers {v['transformers']}, " \
            f"peft {v['peft']}, bitsandbytes {v['bitsandbytes']}"
    if what == "cpu":
        for precision in ("fp32", "bf16"):
            print(table(cpu_records(precision), f"Tiny LLaMA bursts on CPU, {precision} ({stamp})"))
    elif what == "adapters":
        print(table(adapter_records(), f"Tiny LLaMA bursts on CPU, LoRA options and adapter methods, bf16 ({stamp})"))
    elif what == "trace":
        print(table(trace_records(), f"llama-7b traced, bf16, batch 1, seq 512 ({stamp})"))
    else:
        records = json.loads(Path(argv[1]).read_text())
        for mode in ("burst", "trace"):
            print(table([r for r in records if r["mode"] == mode], f"validate: {mode} ({stamp})"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
