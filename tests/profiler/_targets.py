"""Child-process targets for test_child.py: each misbehaves in one documented way."""
import os
import signal
import time


def returns(report, value):
    report({"step": 1, "total": 2, "phase": "forward"})
    report({"step": 2, "total": 2, "phase": "backward"})
    return {"value": value, "pid": os.getpid()}


def raises(report):
    report({"step": 3, "total": 4, "phase": "backward"})
    raise ValueError("boom")


def out_of_memory(report):
    report({"step": 3, "total": 4, "phase": "backward"})
    err = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    err.memfit_context = {"step": 3, "phase": "backward", "allocated_bytes": 23 << 30, "device": "cuda:0"}
    raise err


def killed(report):
    report({"step": 2, "total": 4, "phase": "optimizer_step"})
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)


def hangs(report):
    report({"step": 1, "total": 4, "phase": "forward", "pid": os.getpid()})
    time.sleep(600)


def exits(report):
    os._exit(3)
