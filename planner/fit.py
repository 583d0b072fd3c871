"""`fit`: does it fit, with how much headroom, the largest batch / sequence / rank that fit, and the
smallest set of switches that makes a setup fit."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

from .breakdown import MemoryBreakdown
from .device_count import DeviceCount, min_devices, multi_device_sharding
from .estimate import estimate
from .gpus import get_gpu
from .methods import METHOD_IDS
from .resolve import resolve_spec
from .spec import TrainingSpec

__all__ = ["FitReport", "Suggestion", "fit_report", "fit_all", "fit_records", "largest"]

@dataclass(frozen=True)
class Suggestion:
    """Changes to the spec (field -> value) that make it fit, and the resulting peak."""
    changes: dict
    description: str
    peak_bytes: int


@dataclass(frozen=True)
class FitReport:
    method: str
    fits: bool
    peak_bytes: int
    headroom_bytes: int
    max_batch: int | None
    max_seq: int | None
    max_rank: int | None
    suggestions: tuple[Suggestion, ...]
    breakdown: MemoryBreakdown
    precision_note: str = ""              # the precision assumed, said so that nobody misses it
    alternative: dict | None = None       # the usual HF Trainer precision's figure, for full-rank methods
    device_count: DeviceCount | None = None   # the fewest GPUs of this kind that fit (`planner.device_count`)

    @property
    def min_devices(self) -> int | None:
        return self.device_count.devices if self.device_count else None

    def to_record(self) -> dict:
        return {**self.breakdown.to_record(), "max_batch": self.max_batch, "max_seq": self.max_seq,
                "max_rank": self.max_rank, **(self.device_count.to_record() if self.device_count else {}),
                "suggestions": [{"changes": s.changes, "description": s.description,
                                 "peak_bytes": s.peak_bytes} for s in self.suggestions],
                "precision_note": self.precision_note, "precision_alternative": self.alternative}


def _fits(spec: TrainingSpec) -> bool:
    try:
        return bool(estimate(spec).fits)
    except ValueError:
        return False


def _peak(spec: TrainingSpec) -> int | None:
    try:
        return estimate(spec).peak_bytes
    except ValueError:
        return None


def largest(spec: TrainingSpec, field: str, upper: int) -> int | None:
    """Largest value of `field` in [1, upper] that fits, or None when even 1 does not.

    The peak is monotone in batch, sequence and rank and nearly affine, so the search
    interpolates the crossing of the capacity line (then checks the neighbour), falling back to
    bisection whenever interpolation fails to halve the bracket: a handful of estimates.
    """
    cap = get_gpu(spec.gpu).capacity_bytes
    at = lambda v: _peak(spec.replace(**{field: v}))
    f_lo = at(1)
    if upper < 1 or f_lo is None or f_lo > cap:
        return None
    f_hi = at(upper)
    if f_hi is not None and f_hi <= cap:
        return upper
    lo, hi, bisect = 1, upper, False
    while hi - lo > 1:
        if bisect or f_hi is None or f_hi <= f_lo:
            guess = (lo + hi) // 2
        else:
            guess = lo + int((cap - f_lo) * (hi - lo) / (f_hi - f_lo))
        guess = min(max(guess, lo + 1), hi - 1)
        width = hi - lo
        f = at(guess)
        if f is not None and f <= cap:
            lo, f_lo = guess, f
            nxt = at(guess + 1) if guess + 1 < hi else None
            if guess + 1 < hi and (nxt is None or nxt > cap):
                return guess
            if guess + 1 < hi:
                lo, f_lo = guess + 1, nxt
        else:
            hi, f_hi = guess, f
        bisect = (hi - lo) * 2 > width
    return lo


def _rank_limit(spec: TrainingSpec) -> int | None:
    r = resolve_spec(spec)
    if r.rank is None or "rank" not in r.method.options:
        return None
    return min(min(p.matrix) for p in r.model.projected)


def _switches(spec: TrainingSpec) -> list[tuple[str, dict]]:
    """Each switch a user can flip, as (description, changes): what the method's record allows."""
    r = resolve_spec(spec)
    method, out = r.method, []
    if r.spec.checkpointing == "none":
        out.append(("activation checkpointing", {"checkpointing": "full"}))
    if method.variant_8bit:
        out.append((f"8-bit states ({method.variant_8bit})",
                    {"method": method.variant_8bit, "states": None}))
    if not r.spec.layerwise and method.layerwise and r.spec.sharding == "none":
        out.append(("layer-wise updates", {"layerwise": True}))
    if r.spec.batch > 1:
        out.append(("a smaller micro-batch", {"batch": None}))
    if r.rank and r.rank > 1 and "rank" in method.options:     # the typed rank or the method's default
        out.append(("a lower rank", {"rank": None}))
    engine = multi_device_sharding(spec)
    from .sharding import ENGINES
    if engine and ENGINES[engine].shards and engine != "hsdp":   # only sharding lowers per-device memory
        out.append(("{devices} GPUs with " + engine, {"devices": None}))
    return out


def _apply(spec: TrainingSpec, changes: dict) -> tuple[TrainingSpec, dict] | None:
    """Apply switches; "batch"/"rank" None means "the largest that fits given the others"."""
    fixed = {k: v for k, v in changes.items() if v is not None or k == "states"}
    candidate = spec.replace(**fixed)
    r = resolve_spec(spec)
    for field, upper in (("batch", r.spec.batch - 1), ("rank", (r.rank or 1) - 1)):
        if field in changes and changes[field] is None:
            best = largest(candidate, field, upper)
            if best is None:
                return None
            candidate, fixed = candidate.replace(**{field: best}), {**fixed, field: best}
    if "devices" in changes:              # the fewest devices that fit, given the other switches
        count = min_devices(candidate)
        if count.devices is None or count.devices <= max(r.spec.devices, 1):
            return None
        candidate = candidate.replace(devices=count.devices)
        fixed = {**fixed, "devices": count.devices}
    return (candidate, fixed) if _fits(candidate) else None


def suggestions(spec: TrainingSpec, limit: int = 3) -> tuple[Suggestion, ...]:
    """The smallest sets of switches that make `spec` fit, fewest switches first, lowest peak first."""
    switches = _switches(spec)
    for size in range(1, len(switches) + 1):
        found = []
        for combo in combinations(switches, size):
            changes = {k: v for _, c in combo for k, v in c.items()}
            hit = _apply(spec, changes)
            if hit:
                words = " + ".join(d.format(**hit[1]) for d, _ in combo)
                found.append(Suggestion(hit[1], words, estimate(hit[0]).peak_bytes))
        if found:        # on the GPUs the user has first: buying more is the bigger change
            return tuple(sorted(found, key=lambda s: ("devices" in s.changes, s.peak_bytes))[:limit])
    return ()


def _require_gpu(spec: TrainingSpec) -> None:
    if not spec.gpu:
        raise ValueError("a fit check needs a GPU: name one (e.g. --gpu 4090) or a capacity (--gpu 24GB)")


#: the precision HF Trainer runs a full fine-tune in (an fp32 model with bf16=True / fp16=True)
TRAINER_PRECISION = {"bf16": "amp-bf16", "fp16": "amp-fp16"}


def _precision_note(spec: TrainingSpec, b: MemoryBreakdown) -> tuple[str, dict | None]:
    """What precision the verdict assumed, and for a full-rank method whose precision the user
    left to memfit the figure under HF Trainer's autocast beside it (a pure-bf16 full fine-tune
    needs half the memory of the usual Trainer set-up, so the assumption must not be missed)."""
    r = resolve_spec(spec)
    precision = r.precision
    if spec.precision is not None:
        return f"{precision.id} precision (as asked): {precision.summary}", None
    note = f"assumed {precision.id} precision: {precision.summary}"
    other = TRAINER_PRECISION.get(precision.compute) if r.method.kind == "full" and not precision.autocast else None
    if other and r.spec.sharding in ("fsdp", "hsdp"):
        other = "mixed"       # accelerate runs bf16=True under FSDP2 as fp32 shards, bf16 compute
    if r.spec.sharding.startswith("zero"):
        other = None          # DeepSpeed's bf16.enabled is the mixed precision assumed
    if other is None:
        return note, None
    try:
        alt = estimate(spec.replace(precision=other))
    except ValueError:
        return note, None
    how = (f"HF Trainer with {precision.compute}=True under FSDP2 (accelerate: fp32 shards, {precision.compute} "
           f"compute, {other})" if other == "mixed" else
           f"HF Trainer with {precision.compute}=True on an fp32 model ({other})")
    return note, {"precision": other, "peak_bytes": alt.peak_bytes, "fits": alt.fits,
                  "headroom_bytes": alt.headroom_bytes, "why": how}


def fit_report(spec: TrainingSpec) -> FitReport:
    """Fit verdict and searches for one spec; the spec must name a GPU."""
    _require_gpu(spec)
    b = estimate(spec)
    model = resolve_spec(spec).model
    rank_limit = _rank_limit(spec)
    note, alternative = _precision_note(spec, b)
    if b.fits and spec.devices == 1:      # one device fits: no search needed
        count = DeviceCount(1, spec.sharding if spec.offload != "none" else "none", b.peak_bytes, 1)
    else:
        count = min_devices(spec)
    return FitReport(
        method=b.spec.method, fits=bool(b.fits), peak_bytes=b.peak_bytes, headroom_bytes=b.headroom_bytes,
        max_batch=largest(spec, "batch", 1 << 16), max_seq=largest(spec, "seq", model.max_position),
        max_rank=largest(spec, "rank", rank_limit) if rank_limit else None,
        suggestions=() if b.fits else suggestions(spec), breakdown=b, precision_note=note,
        alternative=alternative, device_count=count)


def _each_method(spec: TrainingSpec, methods: Iterable[str] | None):
    """(method id, its FitReport or the ValueError saying why it cannot take the spec), per method;
    options a method lacks are dropped for it."""
    from .comparison import method_specs
    _require_gpu(spec)
    for s in method_specs(spec, methods or METHOD_IDS):
        try:
            yield s.method, fit_report(s)
        except ValueError as err:
            yield s.method, err


def fit_all(spec: TrainingSpec, methods: Iterable[str] | None = None) -> list[FitReport]:
    """`fit_report` for every method that can take this spec; `fit_records` also says why the
    others cannot."""
    return [r for _, r in _each_method(spec, methods) if isinstance(r, FitReport)]


def fit_records(spec: TrainingSpec, methods: Iterable[str] | None = None) -> list[dict]:
    """One record per method: `fit_report`'s with `error` "", or {"method", "fits": None, "error"}
    saying why this method cannot take the spec (a rank larger than a matrix, say)."""
    return [{**r.to_record(), "error": ""} if isinstance(r, FitReport)
            else {"method": method, "fits": None, "error": str(r)} for method, r in _each_method(spec, methods)]
