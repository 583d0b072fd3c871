"""`python -m profiler`: run, trace, validate, history, calibrate."""
import json
import os
import subprocess
import sys
import time

import pytest

from profiler.cli import main

RECORD_KEYS = {"method", "mode", "component", "predicted_bytes", "measured_bytes", "relative_error"}


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_trace_json_has_the_planners_record_shape_plus_seconds(capsys):
    out = _json(capsys, ["trace", "--model", "llama-7b", "--method", "galore", "--format", "json", "--no-history"])
    assert out["status"] == "ok" and out["seconds"] > 0 and out["extrapolated"]
    assert {"weights", "gradients", "optimizer_states", "projection", "activations"} <= set(out["components"])
    assert out["peak_bytes"] == max(out["phases"].values())
    assert {r["component"] for r in out["comparison"]} >= {"weights", "peak"}


def test_validate_json_is_a_list_of_records(capsys, tiny_config):
    flags = ["--config", tiny_config, "--trace-model", tiny_config, "--methods", "adamw,galore,lora-pro",
             "--rank", "8", "--batch", "2", "--seq", "32", "--precision", "fp32", "--steps", "1", "--layerwise"]
    records = _json(capsys, ["validate", *flags, "--format", "json"])
    assert all(RECORD_KEYS <= set(r) for r in records)
    ok = [r for r in records if r["status"] == "ok"]
    assert {(r["method"], r["mode"]) for r in ok} >= {("adamw", "burst"), ("adamw", "trace"),
                                                      ("galore", "burst"), ("galore", "trace")}
    weights = [r for r in ok if r["component"] == "weights"]
    assert weights and all(r["relative_error"] == 0 for r in weights)
    lora_pro = [r for r in records if r["method"] == "lora-pro"]      # no layer-wise mode
    assert len(lora_pro) == 2 and all(r["component"] is None and r["status"] == "unsupported"
                                      and "layer-wise" in r["message"] for r in lora_pro)


def test_run_table_then_history(capsys, tiny_config):
    assert main(["run", "--config", tiny_config, "--method", "lora", "--rank", "8", "--batch", "2",
                 "--seq", "32", "--precision", "fp32", "--steps", "1"]) == 0
    out = capsys.readouterr()
    assert "lora on cpu" in out.out and "ok (measured)" in out.out and "adapters" in out.out
    assert "step 2 of 2" in out.err
    rows = _json(capsys, ["history", "--format", "json"])
    assert rows[0]["kind"] == "burst" and rows[0]["method"] == "lora" and rows[0]["status"] == "ok"


def test_run_csv_is_the_comparison(capsys, tiny_config):
    assert main(["run", "--config", tiny_config, "--method", "sgd", "--batch", "2", "--seq", "32",
                 "--precision", "fp32", "--steps", "1", "--format", "csv", "--no-history"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "method,mode,component,predicted_bytes,measured_bytes,abs_error,relative_error"


def test_calibration_status_of_an_uncalibrated_gpu(capsys):
    rows = _json(capsys, ["calibrate", "--gpu", "4090", "--format", "json"])
    assert rows[0]["calibrated"] is False and rows[0]["gpu"] == "rtx-4090"


def test_bad_spec_is_an_error_message_and_exit_code_2(capsys):
    assert main(["trace", "--model", "llama-7b", "--method", "adamw", "--rank", "8"]) == 2
    assert "error: adamw has no rank option" in capsys.readouterr().err


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "profiler", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "run,trace,validate,history,calibrate" in proc.stdout.replace(" ", "")


# ------------------------------------------------------------------- bad input and faults
def test_a_run_whose_history_cannot_take_it_still_prints_its_result(capsys, tiny_config, tmp_path):
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"not a database" * 100)
    assert main(["run", "--config", tiny_config, "--method", "sgd", "--batch", "2", "--seq", "32",
                 "--precision", "fp32", "--steps", "1", "--history", str(broken)]) == 0
    out = capsys.readouterr()
    assert "sgd on cpu" in out.out and "ok (measured)" in out.out
    assert "warning: cannot write to the history" in out.err and "Traceback" not in out.err


@pytest.mark.parametrize("argv, message", [
    (["run", "--timeout", "0"], "timeout must be a positive number of seconds, got 0.0"),
    (["run", "--timeout", "-5"], "timeout must be a positive number of seconds"),
    (["run", "--timeout", "nan"], "timeout must be a positive number of seconds, got nan"),
    (["run", "--timeout", "1e999"], "timeout must be a positive number of seconds, got inf"),
    (["run", "--steps", "0"], "steps must be a whole number >= 1, got 0"),
    (["run", "--warmup", "-1"], "warmup must be a whole number >= 0, got -1"),
    (["run", "--device", "gpu"], "unknown device 'gpu'"),
    (["history", "--limit", "0"], "limit must be a positive whole number of records, got 0"),
    (["history", "--limit", "-3"], "limit must be a positive whole number"),
    (["history", "--kind", "nap"], "unknown history kind 'nap'"),
    (["history", "--method", "nomethod"], "unknown method 'nomethod'"),
])
def test_flags_at_their_edges_are_one_line_errors(capsys, argv, message):
    assert main([*argv, "--model", "llama-60m"] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_history_edge_files(capsys, tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    assert main(["history", "--history", str(empty)]) == 0
    assert capsys.readouterr().out.strip() == "(no history yet)"
    assert main(["history", "--history", str(empty), "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip() == "id,created,kind,model,method,device,status,peak"
    assert main(["history", "--history", str(empty), "--kind", "trace"]) == 0
    assert capsys.readouterr().out.strip() == "(no matching records)"
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"garbage" * 500)
    assert main(["history", "--history", str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read the history") and err.count("\n") == 1


def test_output_is_checked_before_a_run_starts(capsys, tmp_path):
    """A mistyped --output is an error at once, not after a five-minute burst that is then lost."""
    start = time.monotonic()
    assert main(["run", "--model", "llama-60m", "--output", str(tmp_path / "no" / "such" / "out.txt")]) == 2
    assert "the folder" in capsys.readouterr().err and time.monotonic() - start < 2
    assert main(["trace", "--model", "llama-60m", "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tmp_path):
    env = {**os.environ, "MEMFIT_HISTORY": str(tmp_path / "h.sqlite")}
    proc = subprocess.Popen([sys.executable, "-m", "profiler", "history", "--format", "csv"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()                     # as `| head -0` does, before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""
