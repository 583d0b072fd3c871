"""What a sharded burst returns: every rank's measurement, or where which rank stopped."""
from __future__ import annotations

from dataclasses import dataclass, field

from planner.spec import TrainingSpec

from ..results import Failure, _Result

__all__ = ["RankMeasurement", "ShardedBurstResult", "ShardedTraceResult"]


@dataclass(frozen=True)
class RankMeasurement:
    """One rank's bytes. `components` as `profiler.results.Measurement` (held weights, adapters,
    buffers, optimizer_states, projection after the step; gradients held when the step starts);
    `engine_buffers` the engine's own (DDP `gradient_buckets`, ZeRO `reduce_bucket`, ZeRO-1's
    `backward_param_grads`: the full gradients alive at the end of backward); `other` anything
    else the engine holds, by attribute; `peak_bytes`, `phases`, `categories`: this rank's
    MemTracker peak, per phase, and its categories at the peak; `peak_rss_bytes` its process."""
    rank: int
    components: dict[str, int]
    engine_buffers: dict[str, int] = field(default_factory=dict)
    other: dict[str, int] = field(default_factory=dict)
    peak_bytes: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    phase_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    peak_rss_bytes: int = 0
    losses: tuple[float, ...] = ()
    step_seconds: tuple[float, ...] = ()


@dataclass(frozen=True)
class ShardedBurstResult(_Result):
    """A short real run on `devices` ranks under `engine`. `ranks` is empty unless status is ok;
    otherwise `failed_rank` and `failure` say which rank stopped where."""
    spec: TrainingSpec
    status: str
    message: str
    engine: str
    devices: int
    options: dict = field(default_factory=dict)
    ranks: tuple[RankMeasurement, ...] = ()
    units: tuple[str, ...] = ()
    failed_rank: int | None = None
    failure: Failure | None = None
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"

    mode = "sharded-burst"


@dataclass(frozen=True)
class ShardedTraceResult(_Result):
    """Rank 0 of a full-size FSDP2 run traced on a fake process group (`profiler.distributed.fake`).
    `components` as a burst's (held bytes); `categories` FSDPMemTracker's at the peak
    (sharded_params, unsharded_params, sharded_grads, unsharded_grads, all_gather, reduce_scatter,
    activations, temporaries, optimizer, inputs, buffers, total); `phase_categories` per phase."""
    spec: TrainingSpec
    status: str
    message: str
    engine: str
    devices: int
    components: dict[str, int] = field(default_factory=dict)
    peak_bytes: int = 0
    peak_phase: str = ""
    phases: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    phase_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    layers: int = 0
    traced_layers: tuple[int, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    mode = "sharded-trace"
