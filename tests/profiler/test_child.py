"""The child-process harness: a result for every way a child can end, and the burst's messages.

Targets live in `_targets.py` and are passed by name, as the profiler passes its own.
"""
import os

import pytest

from planner import TrainingSpec
from profiler import run_burst
from profiler.burst import burst_message, normalize_device
from profiler.child import ChildOutcome, run_in_child

T = "tests.profiler._targets:"


def test_ok_returns_value_and_streams_progress_in_order():
    events = []
    out = run_in_child(T + "returns", 42, timeout=60, on_progress=events.append)
    assert out.status == "ok" and out.value["value"] == 42
    assert out.value["pid"] != os.getpid()
    assert [e["step"] for e in events] == [1, 2]


def test_spawned_child_as_cuda_bursts_use():
    out = run_in_child(T + "returns", 7, timeout=60, start_method="spawn")
    assert out.status == "ok" and out.value["value"] == 7


def test_child_that_raises_is_an_error_result_with_where_it_stopped():
    out = run_in_child(T + "raises", timeout=60)
    assert out.status == "error"
    assert out.error["type"] == "ValueError" and out.error["message"] == "boom"
    assert "Traceback" in out.error["traceback"]
    assert burst_message(out, 60) == "ValueError at step 3 of 4 during backward: boom"


def test_child_out_of_memory_is_reported_with_step_phase_and_bytes():
    out = run_in_child(T + "out_of_memory", timeout=60)
    assert out.status == "oom"
    assert burst_message(out, 60) == "out of memory at step 3 of 4 during backward, 23.00 GiB allocated"


def test_killed_child_is_a_crash_not_an_exception():
    out = run_in_child(T + "killed", timeout=60)
    assert out.status == "crashed" and out.exitcode == -9
    assert burst_message(out, 60) == ("crashed at step 2 of 4 during the optimizer step: "
                                      "the child process was killed by SIGKILL")


def test_child_exiting_without_result_is_a_crash():
    out = run_in_child(T + "exits", timeout=60)
    assert out.status == "crashed" and out.exitcode == 3
    assert "exited with code 3" in burst_message(out, 60)


def test_hanging_child_is_stopped_at_the_timeout():
    out = run_in_child(T + "hangs", timeout=2)
    assert out.status == "timeout"
    assert 2 <= out.seconds < 10
    assert burst_message(out, 2) == "timed out after 2 s at step 1 of 4 during forward"


def test_message_for_outcome_without_progress():
    assert burst_message(ChildOutcome("timeout"), 5) == "timed out after 5 s during start-up"


def test_real_cpu_out_of_memory_in_a_burst(tiny_config):
    """A burst whose activations exceed a 64 MiB cap on the child's growth fails in the forward
    of the first step with the allocator's own error, reported as a result."""
    spec = TrainingSpec(model=tiny_config, method="adamw", batch=64, seq=256, precision="fp32")
    result = run_burst(spec, steps=1, warmup=1, memory_limit=64 << 20, history=False)
    assert result.status == "oom", result.message
    assert result.message.startswith("out of memory at step 1 of 2 during forward, ")
    assert result.message.endswith(" resident")
    assert result.failure.step == 1 and result.failure.phase == "forward"
    assert "can't allocate memory" in result.failure.exception


def test_unsupported_spec_is_reported_not_run(tiny_config):
    spec = TrainingSpec(model=tiny_config, method="adamw", seq=32, precision="mixed")
    result = run_burst(spec, steps=1, history=False)
    assert result.status == "unsupported"
    assert result.message.startswith("not available: mixed precision keeps an fp32 master copy")


def test_device_names():
    assert [normalize_device(d) for d in ("cpu", "CUDA", "cuda:1")] == ["cpu", "cuda:0", "cuda:1"]
    with pytest.raises(ValueError, match="unknown device"):
        normalize_device("gpu")


def test_invalid_spec_raises_value_error_before_starting(tiny_config):
    with pytest.raises(ValueError, match="rank"):
        run_burst(TrainingSpec(model=tiny_config, method="adamw", rank=8, seq=32), history=False)
