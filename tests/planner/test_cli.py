import csv
import io
import json
import subprocess
import sys

import pandas as pd

from planner import METHODS, TrainingSpec, estimate
from planner.spec import PRECISIONS
from planner.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_json_equals_library(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama 60m", "--method", "galore", "--rank", "64",
                       "--gpu", "4090", "--format", "json")
    rec = json.loads(out)
    lib = estimate(TrainingSpec(model="llama-60m", method="galore", rank=64, gpu="4090")).to_record()
    assert code == 0 and rec == json.loads(json.dumps(lib))
    assert rec["spec"]["rank"] == 64 and rec["fits"] is True


def test_estimate_table_mentions_verdict(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama-7b", "--method", "adamw", "--gpu", "4090")
    assert code == 0 and "does NOT fit" in out and "optimizer_states" in out


def test_compare_csv_reloads_with_pandas(capsys, tmp_path):
    target = tmp_path / "cmp.csv"
    code, _, _ = run(capsys, "compare", "--model", "llama-60m", "--gpu", "4090", "--format", "csv",
                     "--output", str(target), "--all-precisions")
    df = pd.read_csv(target)
    assert code == 0 and len(df) == len(METHODS) * len(PRECISIONS)
    row = df[(df.method == "galore") & (df.precision == "bf16")].iloc[0]
    lib = estimate(TrainingSpec(model="llama-60m", method="galore", gpu="4090", precision="bf16"))
    assert int(row.peak_bytes) == lib.peak_bytes and int(row["rank"]) == 128
    assert set(TrainingSpec.__dataclass_fields__) <= set(df.columns)


def test_compare_json_one_record_per_method(capsys):
    code, out, _ = run(capsys, "compare", "--model", "gpt2", "--format", "json", "--methods", "adamw,lora,galore")
    recs = json.loads(out)
    assert code == 0 and [r["method"] for r in recs] == ["adamw", "lora", "galore"]


def test_listings(capsys):
    for what, expect in [("models", "llama-7b"), ("gpus", "rtx-4090"), ("methods", "q-galore")]:
        code, out, _ = run(capsys, what, "--format", "csv")
        assert code == 0 and expect in out
        assert len(list(csv.DictReader(io.StringIO(out)))) >= 16


def test_errors_are_one_line_messages(capsys):
    code, out, err = run(capsys, "estimate", "--model", "llama-7bb")
    assert code == 2 and out == "" and err.startswith("error: unknown model") and "Traceback" not in err
    code, _, err = run(capsys, "estimate", "--method", "galore", "--rank", "0")
    assert code == 2 and "rank must be positive" in err


def test_config_file_flag(capsys, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                               "vocab_size": 500, "n_positions": 128}))
    code, out, _ = run(capsys, "estimate", "--config", str(cfg), "--method", "lora", "--rank", "4",
                       "--seq", "64", "--format", "json")
    assert code == 0 and json.loads(out)["components"]["adapters"] > 0


def test_module_entry_point_cold():
    proc = subprocess.run([sys.executable, "-m", "planner", "estimate", "--method", "qlora", "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["method"] == "qlora"
