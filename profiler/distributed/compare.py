"""Each rank's measured bytes beside the planner's per-device prediction (`planner.sharding`)."""
from __future__ import annotations

from planner.resolve import resolve_spec
from planner.sharding import device_memory

from ..compare import ComponentError
from .results import ShardedBurstResult

__all__ = ["HELD", "predicted_ranks", "compare_ranks"]

#: held components compared rank by rank (equal to the byte: tests/planner/test_sharding_engines.py)
HELD = ("weights", "gradients", "optimizer_states", "projection", "adapters")
#: engine buffers the planner predicts, under the names the measurement uses
_BUFFERS = {"gradient_buckets": "gradient_buckets", "reduce_bucket": "reduce_bucket",
            "full_gradients": "backward_param_grads"}


def predicted_ranks(result: ShardedBurstResult) -> list[dict[str, int]]:
    """The planner's bytes for every rank of `result`'s run, with the same engine options."""
    r = resolve_spec(result.spec)
    options = {k: v for k, v in result.options.items() if k != "offload"}
    plan = device_memory(r, result.engine, result.devices, options, offload=result.spec.offload,
                         shard_group=result.spec.shard_group)
    extra = {**plan.buffers, **{k: v for phase in plan.phase_extra.values() for k, v in phase.items()}}
    return [{**{c: getattr(m.memory, c) for c in HELD}, **{_BUFFERS[k]: v for k, v in extra.items() if k in _BUFFERS}}
            for m in plan.ranks]


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
