"""Real multi-process engines on CPU ranks, measured per rank, and full-size FSDP2 traces.

`run_sharded(spec)` trains `spec` on `spec.devices` ranks under `spec.sharding` (DDP, FSDP2,
DeepSpeed ZeRO-1/2/3) with torchrun and gloo (`launch`, `worker`, `rank`, `engines`, `held`);
`compare_ranks(result)` sets every rank beside `planner.sharding`'s prediction; `trace_sharded(spec)`
traces rank 0 of a full-size FSDP2 run on a fake process group (`fake`). Importing this package,
`burst`, `launch` or `compare` imports no torch: the ranks and the trace's child do the work.
"""
from .burst import run_sharded, run_sharded_many
from .compare import compare_ranks, predicted_ranks
from .results import RankMeasurement, ShardedBurstResult, ShardedTraceResult

__all__ = ["run_sharded", "run_sharded_many", "compare_ranks", "predicted_ranks", "trace_sharded",
           "RankMeasurement", "ShardedBurstResult", "ShardedTraceResult"]


def trace_sharded(*args, **kwargs):
    """Rank 0 of a full-size FSDP2 run traced on a fake process group; see profiler.distributed.fake."""
    from .fake import trace_sharded as _trace
    return _trace(*args, **kwargs)
