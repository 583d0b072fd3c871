"""Rank targets for test_distributed_launch.py: each run misbehaves in one documented way."""
import os
import signal
import time


def _group():
    import torch
    import torch.distributed as dist
    dist.init_process_group("gloo")
    return torch, dist


def agree(report, rank, world, payload):
    torch, dist = _group()
    report({"step": 1, "total": 1, "phase": "forward"})
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    dist.destroy_process_group()
    return {"rank": rank, "world": world, "sum": t.item(), "payload": payload}


def _the_others_wait(report, dist, torch):
    """Every rank but the faulty one enters a collective the faulty rank never joins."""
    report({"step": 1, "total": 2, "phase": "backward"})
    dist.all_reduce(torch.ones(1))


def one_rank_hangs(report, rank, world, payload):
    torch, dist = _group()
    if rank == payload["faulty"]:
        report({"step": 1, "total": 2, "phase": "forward"})
        time.sleep(3600)
    _the_others_wait(report, dist, torch)


def one_rank_dies(report, rank, world, payload):
    torch, dist = _group()
    if rank == payload["faulty"]:
        report({"step": 2, "total": 2, "phase": "optimizer_step"})
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    _the_others_wait(report, dist, torch)


def one_rank_raises(report, rank, world, payload):
    torch, dist = _group()
    if rank == payload["faulty"]:
        report({"step": 1, "total": 2, "phase": "backward"})
        raise ValueError("boom")
    _the_others_wait(report, dist, torch)
