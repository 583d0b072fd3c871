"""The torchrun launcher: a rank that hangs, dies or raises is a result naming the rank and the
phase, and no rank of the run is left running afterwards (targets in `_dist_targets.py`)."""
import pytest

from profiler.distributed.burst import sharded_message
from profiler.distributed.launch import alive_ranks, launch

pytestmark = pytest.mark.engines
T = "tests.profiler._dist_targets:"


def _no_rank_left(out):
    assert out.leftover_pids == ()
    assert alive_ranks(None, out.token) == [], "a rank of the run is still running"


def test_ranks_return_their_values_and_see_each_other():
    out = launch(T + "agree", {"x": 1}, 2, timeout=120)
    assert out.ok, out.log
    assert [r.value["sum"] for r in out.ranks] == [3.0, 3.0]         # 1 + 2, all-reduced over gloo
    assert [r.value["rank"] for r in out.ranks] == [0, 1] and out.ranks[1].value["payload"] == {"x": 1}
    _no_rank_left(out)


def test_a_hung_rank_is_a_timeout_naming_it_and_nothing_is_left_running():
    out = launch(T + "one_rank_hangs", {"faulty": 1}, 2, timeout=15)
    assert out.status == "timeout" and out.failed_rank == 1
    assert sharded_message(out, 15) == ("timed out after 15 s: rank 1 stuck at step 1 of 2 during forward "
                                        "(the others waited for it: rank 0 at step 1 of 2 during backward)")
    _no_rank_left(out)


def test_a_killed_rank_is_a_crash_naming_it_and_its_signal():
    out = launch(T + "one_rank_dies", {"faulty": 1}, 2, timeout=120)
    assert out.status == "crashed" and out.failed_rank == 1 and out.ranks[1].exitcode == -9
    assert sharded_message(out, 120) == ("rank 1 crashed at step 2 of 2 during the optimizer step: the process "
                                         "was killed by SIGKILL; the other ranks were stopped")
    _no_rank_left(out)


def test_a_rank_that_raises_is_its_error_not_the_others_lost_connection():
    out = launch(T + "one_rank_raises", {"faulty": 0}, 2, timeout=120)
    assert out.status == "error" and out.failed_rank == 0
    assert sharded_message(out, 120) == "ValueError on rank 0 at step 1 of 2 during backward: boom"
    _no_rank_left(out)
