"""`python -m profiler`: run, trace, validate, history, calibrate."""
import json
import subprocess
import sys

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
