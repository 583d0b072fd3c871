"""One rank under torchrun: `python -m profiler.distributed.worker RUN_DIR TARGET`.

Runs `TARGET(report, rank, world, payload)` ("package.module:function") and leaves its files in
RUN_DIR (see `profiler.distributed.launch`): the last progress event, then exactly one of the
result or the error. `report(event)` adds this rank's pid and replaces the progress file
atomically, so the parent never reads half an event.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["main", "write_json"]

_PR_SET_PDEATHSIG = 1


def write_json(path: Path, value) -> None:
    """Write `value` as JSON to `path` atomically (a rename within the folder)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _die_with_parent() -> None:
    """SIGKILL this rank when torchrun dies, however it dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:       # torchrun died before the request took effect
        os._exit(1)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str]) -> int:
    run_dir, target = Path(argv[0]), argv[1]
    _die_with_parent()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    last: dict = {}

    def report(event: dict) -> None:
        last.clear()
        last.update(event)
        write_json(run_dir / f"rank{rank}.progress.json", {**event, "pid": os.getpid(), "rank": rank})
    report({"phase": "start-up"})
    payload = json.loads((run_dir / "payload.json").read_text())
    try:
        value = _resolve(target)(report, rank, world, payload)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes this rank's error file
        from profiler.child import describe_exception
        error = {**{k: last.get(k) for k in ("step", "total", "phase", "job")}, **describe_exception(exc),
                 "time": time.time()}
        write_json(run_dir / f"rank{rank}.error.json", error)
        return 1
    write_json(run_dir / f"rank{rank}.result.json", {"value": value})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
