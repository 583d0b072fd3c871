"""The local history: atomic records, readable after a writer is killed half-way."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from profiler import entries, history_path
from profiler.history import HistoryError, record, record_safely


def test_path_from_argument_then_environment(tmp_path, monkeypatch):
    assert history_path(tmp_path / "x.sqlite") == tmp_path / "x.sqlite"
    monkeypatch.setenv("MEMFIT_HISTORY", str(tmp_path / "env.sqlite"))
    assert history_path() == tmp_path / "env.sqlite"
    monkeypatch.delenv("MEMFIT_HISTORY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert history_path() == tmp_path / "data" / "memfit" / "history.sqlite"


def test_round_trip_newest_first_and_filters(tmp_path):
    path = tmp_path / "h.sqlite"
    assert entries(path) == []
    a = record("burst", {"status": "ok", "peak": 1}, spec={"model": "m", "method": "galore"},
               device="cpu", status="ok", path=path)
    b = record("trace", {"status": "ok"}, spec={"model": "llama-7b", "method": "adamw"}, path=path)
    rows = entries(path)
    assert [r.id for r in rows] == [b, a]
    assert rows[1].result == {"status": "ok", "peak": 1} and rows[1].method == "galore"
    assert rows[1].versions["torch"] and rows[1].created.endswith("+00:00")
    assert [r.id for r in entries(path, kind="burst")] == [a]
    assert [r.id for r in entries(path, method="adamw")] == [b]
    with pytest.raises(ValueError, match="unknown history kind"):
        record("nap", {}, path=path)


WRITER = textwrap.dedent("""
    import sys
    from profiler.history import record
    path = sys.argv[1]
    for i in range(100000):
        record("burst", {"i": i, "pad": "x" * 2000}, spec={"model": "m", "method": "adamw"}, path=path)
        print(i, flush=True)
""")


def test_writer_killed_half_way_leaves_every_earlier_record(tmp_path):
    path = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    done = [int(proc.stdout.readline()) for _ in range(30)]   # 30 records confirmed written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rows = entries(path)
    ids = sorted(r.result["i"] for r in rows)
    assert ids[: len(done)] == done                # nothing confirmed was lost
    assert ids == list(range(len(ids)))            # and nothing half-written appears
    record("burst", {"i": "after"}, path=path)     # the file still takes records
    assert entries(path, limit=1)[0].result == {"i": "after"}


# ------------------------------------------------------------- a history that cannot be used
UNWRITABLE = ["file-as-folder", "proc", "corrupt", "directory"]


def _broken(tmp_path, how: str) -> Path:
    """A history path that cannot take a record, whoever runs the test (root included)."""
    if how == "file-as-folder":
        (tmp_path / "plain-file").write_text("x")
        return tmp_path / "plain-file" / "history.sqlite"        # its folder cannot be made
    if how == "proc":
        return Path("/proc/memfit-no-such/history.sqlite")         # procfs takes no new folder
    if how == "corrupt":
        path = tmp_path / "corrupt.sqlite"
        path.write_bytes(b"not an SQLite database at all " * 200)
        return path
    path = tmp_path / "a-folder.sqlite"
    path.mkdir()
    return path


@pytest.mark.parametrize("how", UNWRITABLE)
def test_a_history_that_cannot_be_written_is_a_clear_error(tmp_path, how):
    path = _broken(tmp_path, how)
    with pytest.raises(HistoryError, match=r"cannot write to the history .* point \$MEMFIT_HISTORY"):
        record("burst", {"i": 1}, path=path)
    assert "cannot write to the history" in record_safely("burst", {"i": 1}, path=path)
    assert record_safely("burst", {"i": 1}, path=tmp_path / "new" / "folder" / "h.sqlite") == ""


@pytest.mark.parametrize("how", ["corrupt", "directory"])
def test_a_damaged_history_is_a_clear_error_when_read(tmp_path, how):
    with pytest.raises(HistoryError, match="cannot read the history"):
        entries(_broken(tmp_path, how))


def test_an_empty_file_is_an_empty_history_and_a_damaged_record_is_kept(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    assert entries(empty) == []
    path = tmp_path / "h.sqlite"
    good = record("burst", {"status": "ok"}, spec={"model": "m", "method": "adamw"}, path=path)
    bad = record("burst", {"status": "ok"}, path=path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET result = '{broken', spec = '[1, 2]' WHERE id = ?", (bad,))
    rows = entries(path)
    assert [r.id for r in rows] == [bad, good]
    assert rows[0].result == {"status": "damaged", "message": "damaged record: not readable JSON"}
    assert rows[0].spec == {}


def test_history_filters_at_their_edges(tmp_path):
    path = tmp_path / "h.sqlite"
    ids = [record("burst", {}, spec={"model": "m", "method": m}, path=path) for m in ("galore-8bit", "adamw")]
    assert [r.id for r in entries(path, method="GaLore 8bit")] == [ids[0]]     # forgiving method names
    assert [r.id for r in entries(path, limit=1)] == [ids[1]]
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit must be a positive whole number"):
            entries(path, limit=limit)
    with pytest.raises(ValueError, match="unknown history kind 'nap'"):
        entries(path, kind="nap")
    with pytest.raises(ValueError, match="unknown method 'nomethod'"):
        entries(path, method="nomethod")


@pytest.mark.parametrize("how", UNWRITABLE)
def test_a_finished_run_is_returned_with_the_history_problem_beside_it(tmp_path, how):
    from planner import TrainingSpec
    from profiler.burst import record_result
    from profiler.results import BurstResult, Measurement
    result = BurstResult(TrainingSpec(model="llama-60m"), "ok", "measured", "cpu", 1, 1,
                         measurement=Measurement({"weights": 1}, 1))
    kept = record_result("burst", result, _broken(tmp_path, how))
    assert kept.measurement == result.measurement and kept.status == "ok"
    assert "cannot write to the history" in kept.history_warning
    assert record_result("burst", result, tmp_path / "fine.sqlite").history_warning == ""
