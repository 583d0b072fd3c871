"""`python -m profiler run|trace --devices N --sharding ...`: a real sharded run's per-rank table,
a full-size FSDP2 trace, and the combinations refused with a message (no rank started)."""
import json

import pytest

from profiler.cli import main


def test_refused_combinations_say_what_to_change(capsys, tiny_config):
    base = ["--config", tiny_config, "--batch", "2", "--seq", "16", "--no-history"]
    cases = [(["run", "--devices", "2", *base], "needs --sharding"),
             (["run", "--devices", "2", "--sharding", "zero2", "--method", "galore", "--rank", "8", *base], "does not run under"),
             (["run", "--devices", "2", "--sharding", "zero3", "--precision", "bf16", *base],
              "use --precision mixed or fp32"),
             (["run", "--devices", "1", "--sharding", "fsdp", *base], "needs --devices 2 or more"),
             (["trace", "--devices", "8", "--sharding", "zero3", "--precision", "mixed", *base], "runs only as a real burst")]
    for argv, words in cases:
        assert main(argv) == 2
        assert words in capsys.readouterr().err


@pytest.mark.engines
def test_trace_json_holds_the_planners_per_device_bytes(capsys):
    assert main(["trace", "--model", "llama-60m", "--devices", "4", "--sharding", "fsdp", "--format", "json",
                 "--no-history"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["mode"] == "sharded-trace" and out["devices"] == 4
    rows = {r["component"]: r for r in out["comparison"]}
    assert set(rows) == {"weights", "gradients", "optimizer_states", "projection", "adapters", "peak"}
    assert all(r["abs_error"] == 0 for c, r in rows.items() if c != "peak")
    assert abs(rows["peak"]["relative_error"]) < 0.03      # estimate(spec)'s per-device peak
    assert out["peak_bytes"] == max(out["phases"].values())
    # llama-60m's 32000-row lm_head outweighs a layer: the tail unit [norm, lm_head] is what stays
    # gathered at the forward peak, the size planner.sharding gives it
    from planner import TrainingSpec
    from planner.resolve import resolve_spec
    from planner.sharding import device_memory
    units = device_memory(resolve_spec(TrainingSpec(model="llama-60m")), "fsdp", 4).phase_extra["units"]
    assert out["phase_categories"]["forward"]["unsharded_params"] == units["tail"]
