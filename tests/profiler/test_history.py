"""The local history: atomic records, readable after a writer is killed half-way."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from profiler import entries, history_path
from profiler.history import record


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
