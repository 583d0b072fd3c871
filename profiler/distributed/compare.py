"""Each rank's measured bytes beside the planner's per-device prediction: `estimate(spec)`'s
per-device components (`planner.per_device`), rank by rank."""
from __future__ import annotations

from planner.estimate import estimate

from ..compare import ComponentError
from .results import ShardedBurstResult

__all__ = ["HELD", "predicted_ranks", "compare_ranks", "compare_trace", "prediction"]

#: held components compared rank by rank (equal to the byte: tests/profiler/test_distributed.py)
HELD = ("weights", "gradients", "optimizer_states", "projection", "adapters")
#: engine buffers the planner predicts, under the names the measurement uses
_BUFFERS = {"gradient_buckets": "gradient_buckets", "reduce_bucket": "reduce_bucket",
            "full_gradients": "backward_param_grads", "offload_staging": "offload_staging",
            "host_staging": "host_staging"}


def prediction(result: ShardedBurstResult):
    """`estimate` of the run's spec on CPU kernels, with the run's engine options."""
    options = {k: v for k, v in result.options.items() if k != "offload"}
    return estimate(result.spec, kernels="cpu", engine_options=options)


def predicted_ranks(result: ShardedBurstResult) -> list[dict[str, int]]:
    """The planner's bytes for every rank of `result`'s run: each rank's held components (with
    offload, device and host together: on CPU ranks both are the same memory) and the engine's
    buffers."""
    b = prediction(result)
    plan = b.parallel.plan
    extra = {**plan.buffers, **plan.host_buffers,
             **{k: v for phase in plan.phase_extra.values() for k, v in phase.items()}}
    return [{**{c: rank[f"{c}_bytes"] + rank.get(f"host_{c}_bytes", 0) for c in HELD},
             **{_BUFFERS[k]: v for k, v in extra.items() if k in _BUFFERS}} for rank in b.parallel.rank_totals]
def compare_ranks(result: ShardedBurstResult) -> list[dict]:
    """{rank, component, predicted_bytes, measured_bytes, abs_error, relative_error} per rank and
    component the planner predicts and the rank measured."""
    if not result.ok:
        return []
    out = []
    for rank, predicted in zip(result.ranks, predicted_ranks(result)):
        measured = {**rank.components, **rank.engine_buffers}
        for name, value in predicted.items():
            if name in measured:
                out.append({"rank": rank.rank, **ComponentError(name, value, measured[name]).to_record()})
    return out


def compare_trace(result) -> list[dict]:
    """A full-size FSDP2 trace of rank 0 (`profiler.distributed.fake`) beside `estimate(spec)`:
    the held components (rank 0 is the one holding the most) and the peak, the planner's without
    its device overhead (the caching allocator and the CUDA context, which a trace has not)."""
    b = estimate(result.spec, kernels="cpu")
    sizes = b.sizes.as_dict()
    rows = [ComponentError(c, sizes[c], result.components[c]) for c in HELD]
    rows.append(ComponentError("peak", b.peak_bytes - b.components.overhead, result.peak_bytes))
    return [r.to_record() for r in rows]
