"""The child-process harness: a result for every way a child can end, and the burst's messages.

Targets live in `_targets.py` and are passed by name, as the profiler passes its own.
"""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from planner import TrainingSpec
from profiler import run_burst
from profiler.burst import burst_message, normalize_device
from profiler.child import ChildOutcome, run_in_child

T = "tests.profiler._targets:"
ROOT = Path(__file__).resolve().parents[2]


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


# ------------------------------------------------------------- cancel, heartbeat, time limits
def _gone(pid: int, within: float = 5.0) -> bool:
    """The process has exited (a zombie not yet reaped by init counts as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_cancel_stops_the_child_and_is_a_result():
    cancel, events = threading.Event(), []

    def on_progress(event):
        events.append(event)
        threading.Timer(0.5, cancel.set).start()

    out = run_in_child(T + "hangs", timeout=60, on_progress=on_progress, cancel=cancel)
    assert out.status == "cancelled" and out.seconds < 10
    assert _gone(events[0]["pid"])
    assert burst_message(out, 60).startswith("cancelled after ")
    assert burst_message(out, 60).endswith(" at step 1 of 4 during forward")


def test_heartbeat_ticks_while_the_child_is_silent_and_its_exception_stops_the_child():
    """What the Validate page relies on: `on_tick` runs about every TICK_S while the child says
    nothing; an exception raised there (Streamlit's rerun, Ctrl-C) ends the child and propagates."""
    ticks, pids = [], []

    def on_tick(seconds, last):
        ticks.append(seconds)
        if last:
            pids.append(last["pid"])
        if seconds > 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_child(T + "hangs", timeout=60, on_tick=on_tick)
    assert len(ticks) >= 3 and all(b - a < 1.5 for a, b in zip(ticks, ticks[1:]))
    assert pids and _gone(pids[-1])


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "soon", True, None])
def test_a_time_limit_must_be_a_positive_number_of_seconds(timeout):
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        run_in_child(T + "returns", 1, timeout=timeout)


def test_a_burst_cancelled_in_flight_is_a_cancelled_result(tiny_config):
    cancel = threading.Event()
    spec = TrainingSpec(model=tiny_config, method="adamw", batch=2, seq=32, precision="fp32")
    result = run_burst(spec, steps=50, warmup=1, history=False, cancel=cancel,
                       on_progress=lambda e: cancel.set() if e.get("step") == 2 else None)
    assert result.status == "cancelled" and not result.ok
    assert result.message.startswith("cancelled after ") and " at step 2 of 51 during " in result.message


# ------------------------------------------------------------------ children die with the caller
CALLER = textwrap.dedent("""
    import sys
    from profiler.child import run_in_child
    run_in_child("tests.profiler._targets:hangs", timeout=600, start_method=sys.argv[1],
                 on_progress=lambda e: print("child", e["pid"], flush=True),
                 on_tick=lambda seconds, last: print("tick", seconds, flush=True))
""")


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_kill_9_of_the_caller_leaves_no_process_behind(start_method):
    """The burst child, the fork server and multiprocessing's resource tracker all end within a
    few seconds of a SIGKILL to the process that started them."""
    proc = subprocess.Popen([sys.executable, "-c", CALLER, start_method], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        ticks, line = [], proc.stdout.readline().split()
        while line[0] == "tick":
            ticks.append(float(line[1]))
            line = proc.stdout.readline().split()
        child = int(line[1])
        family = psutil.Process(proc.pid).children(recursive=True)
        assert child in {p.pid for p in family} and len(family) >= 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    if start_method == "forkserver":
        # a fresh fork server imports torch before it forks the child (seconds here): the caller's
        # heartbeat ticks all through it (the Validate page's text once froze for that long)
        assert len(ticks) >= 2 and all(b - a < 1.5 for a, b in zip(ticks, ticks[1:])), ticks
    left = [p.pid for p in family if not _gone(p.pid, within=10)]
    for pid in left:                       # do not leave them to the next test
        psutil.Process(pid).kill()
    assert not left
