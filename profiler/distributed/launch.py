"""Launch N ranks under `torchrun` and bring back one outcome, whatever happens to any of them.

The parent (a CLI, a test, the app) imports no torch here. It starts
`python -m torch.distributed.run --standalone --nproc-per-node N -m profiler.distributed.worker`
in a session of its own; each rank runs `target(report, rank, world, payload)` and leaves files in
a private run folder (`profiler.distributed.worker`):

    payload.json                 what every rank reads
    rank{r}.progress.json        its last progress event ({"pid", "step", "total", "phase", ...})
    rank{r}.result.json          its return value (written once, atomically)
    rank{r}.error.json           the exception it raised (type, message, traceback, step, phase)

A rank that raises, dies or hangs is found by rank and phase: torchrun stops the other ranks when
one exits non-zero (torch/distributed/elastic/agent/server/api.py, `_invoke_run`); at the deadline
the parent sends SIGTERM to torchrun, which closes its workers, then SIGKILLs whatever is left —
torchrun's group, and every rank's own session (torch's `SubprocessHandler` starts each worker
with `start_new_session=True`, so a worker is not in torchrun's process group). A rank is only
killed after /proc shows it still carries this run's token, so a recycled pid is never touched.
Each rank also asks the kernel for SIGKILL when torchrun dies (`PR_SET_PDEATHSIG`), so even a
SIGKILLed parent leaves no rank behind.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RankOutcome", "LaunchOutcome", "launch", "RUN_TOKEN_ENV", "alive_ranks"]

RUN_TOKEN_ENV = "MEMFIT_DIST_RUN"
_POLL_S = 0.1
_TERM_GRACE_S = 5.0
#: torchrun's failure summary: "rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 123)", and the
#: rank it names under "Root Cause (first observed failure)"
_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")
_ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):.*?rank\s*:\s*(\d+)", re.S)
#: how far a rank got, for blaming the one left behind when a run hangs
PHASE_ORDER = ("start-up", "build", "setup", "forward", "backward", "optimizer_step", "done", "measure")


@dataclass(frozen=True)
class RankOutcome:
    """What one rank left: status ok | error | oom | crashed | timeout, its last progress event,
    its value (ok) or error description, and its exit code when torchrun reported one."""
    rank: int
    status: str
    value: object = None
    error: dict | None = None
    progress: dict | None = None
    exitcode: int | None = None


@dataclass(frozen=True)
class LaunchOutcome:
    """The run: `status` is ok only if every rank returned a value; otherwise the first failure's
    status (error/oom before crashed before timeout) and `failed_rank`. `log` is the tail of
    torchrun's own output (its failure summary and the ranks' stderr)."""
    status: str
    ranks: tuple[RankOutcome, ...]
    failed_rank: int | None = None
    seconds: float = 0.0
    log: str = ""
    leftover_pids: tuple[int, ...] = field(default=())
    token: str = ""            # carried by every rank's environment as $MEMFIT_DIST_RUN

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _python_path() -> str:
    """The folder holding this `profiler` package first, so the ranks import this very code."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return root + (os.pathsep + rest if rest else "")


def _command(nprocs: int, run_dir: Path, target: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nprocs}",
            "--max-restarts=0", "--monitor-interval=0.2", "-m", "profiler.distributed.worker",
            str(run_dir), target]


def _carries_token(pid: int, token: str) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{RUN_TOKEN_ENV}={token}".encode() in env.split(b"\0")


def alive_ranks(pids, token: str) -> list[int]:
    """The pids among `pids` (default: every process) still running with run `token`."""
    if pids is None:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    return [pid for pid in pids if _carries_token(pid, token)]


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _rank_pids(run_dir: Path, nprocs: int) -> list[int]:
    out = []
    for r in range(nprocs):
        event = _read(run_dir / f"rank{r}.progress.json") or {}
        if isinstance(event.get("pid"), int):
            out.append(event["pid"])
    return out


def _stop(proc: subprocess.Popen, run_dir: Path, nprocs: int, token: str) -> tuple[int, ...]:
    """SIGTERM torchrun (it closes its workers), then SIGKILL its group and every rank's session."""
    if proc.poll() is None:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(_TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc.pid, signal.SIGKILL)
    for pid in alive_ranks(_rank_pids(run_dir, nprocs), token):
        _kill_group(pid, signal.SIGKILL)     # each rank leads its own session (torchrun's doing)
    proc.wait()
    deadline = time.monotonic() + _TERM_GRACE_S
    while time.monotonic() < deadline:
        left = alive_ranks(_rank_pids(run_dir, nprocs), token)
        if not left:
            return ()
        time.sleep(_POLL_S)
    return tuple(left)


def _exit_codes(log: str) -> dict[int, int]:
    return {int(r): int(c) for r, c in _FAILURE.findall(log)}


def _rank_outcomes(run_dir: Path, nprocs: int, timed_out: bool, codes: dict[int, int]) -> list[RankOutcome]:
    out = []
    for r in range(nprocs):
        progress = _read(run_dir / f"rank{r}.progress.json")
        result = _read(run_dir / f"rank{r}.result.json")
        error = _read(run_dir / f"rank{r}.error.json")
        if result is not None:
            out.append(RankOutcome(r, "ok", result.get("value"), None, progress, codes.get(r)))
        elif error is not None:
            out.append(RankOutcome(r, "oom" if error.get("oom") else "error", None, error, progress, codes.get(r)))
        else:
            out.append(RankOutcome(r, "timeout" if timed_out else "crashed", None, None, progress, codes.get(r)))
    return out


def _behind(r: RankOutcome) -> tuple:
    """Sort key: the rank that got least far (job, step, phase) first."""
    p = r.progress or {}
    phase = p.get("phase")
    return (p.get("job") or 0, p.get("step") or 0, PHASE_ORDER.index(phase) if phase in PHASE_ORDER else 0, r.rank)


def _first_failure(ranks: list[RankOutcome], log: str, timed_out: bool) -> RankOutcome | None:
    """The rank to blame. A hang: the rank that got least far (the others wait for it in a
    collective). A rank that died without an error of its own (a signal other than the SIGTERM
    torchrun sends the survivors, or a bare exit). Otherwise the earliest error written: a rank
    writes its own error before it exits, and only its exit breaks the others' connections
    ("connection closed by peer"). Last, torchrun's root cause."""
    failed = [r for r in ranks if r.status != "ok"]
    if not failed:
        return None
    if timed_out:
        return min(failed, key=_behind)
    died = [r for r in failed if r.status == "crashed" and r.exitcode != -signal.SIGTERM]
    if died:
        return died[0]
    errors = [r for r in failed if r.error]
    if errors:
        return min(errors, key=lambda r: (r.error.get("time", float("inf")), r.rank))
    root = _ROOT_CAUSE.search(log)
    if root and int(root.group(1)) < len(ranks):
        return ranks[int(root.group(1))]
    return failed[0]


def launch(target: str, payload: dict, nprocs: int, *, timeout: float = 600.0,
           env: dict[str, str] | None = None, on_progress: Callable[[int, dict], None] | None = None,
           keep_dir: bool = False) -> LaunchOutcome:
    """Run `target` ("package.module:function") on `nprocs` ranks; never raises for what a rank does.

    `on_progress(rank, event)` is called as a rank reports. `env` is added to the ranks' environment.
    """
    token = secrets.token_hex(8)
    run_dir = Path(tempfile.mkdtemp(prefix="memfit-dist-"))
    (run_dir / "payload.json").write_text(json.dumps(payload))
    child_env = {**os.environ, **(env or {}), RUN_TOKEN_ENV: token, "PYTHONPATH": _python_path(),
                 "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log_path = run_dir / "torchrun.log"
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_command(nprocs, run_dir, target), env=child_env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    seen: dict[int, str] = {}
    timed_out = False
    try:
        while proc.poll() is None:
            if time.monotonic() - start > timeout:
                timed_out = True
                break
            _forward_progress(run_dir, nprocs, seen, on_progress)
            time.sleep(_POLL_S)
    finally:
        leftover = _stop(proc, run_dir, nprocs, token)
    _forward_progress(run_dir, nprocs, seen, on_progress)
    log_text = log_path.read_text(errors="replace")
    codes = _exit_codes(log_text)
    ranks = _rank_outcomes(run_dir, nprocs, timed_out, codes)
    failed = _first_failure(ranks, log_text, timed_out)
    status = "ok" if failed is None else ("timeout" if timed_out else failed.status)
    if not keep_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return LaunchOutcome(status, tuple(ranks), None if failed is None else failed.rank,
                         time.monotonic() - start, log_text[-6000:], leftover, token)


def _forward_progress(run_dir: Path, nprocs: int, seen: dict[int, str], on_progress) -> None:
    if on_progress is None:
        return
    for r in range(nprocs):
        path = run_dir / f"rank{r}.progress.json"
        try:
            text = path.read_text()
        except OSError:
            continue
        if seen.get(r) != text:
            seen[r] = text
            event = _read(path)
            if event is not None:
                on_progress(r, event)
