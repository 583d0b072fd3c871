"""`fit`: does it fit, with how much headroom, the largest batch / sequence / rank that fit, and the
smallest set of switches that makes a setup fit."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

from .breakdown import MemoryBreakdown
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

    def to_record(self) -> dict:
        return {**self.breakdown.to_record(), "max_batch": self.max_batch, "max_seq": self.max_seq,
                "max_rank": self.max_rank,
                "suggestions": [{"changes": s.changes, "description": s.description,
                                 "peak_bytes": s.peak_bytes} for s in self.suggestions]}


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
    if not r.spec.layerwise and method.layerwise:
        out.append(("layer-wise updates", {"layerwise": True}))
    if r.spec.batch > 1:
        out.append(("a smaller micro-batch", {"batch": None}))
    if r.rank and r.rank > 1 and "rank" in method.options:     # the typed rank or the method's default
        out.append(("a lower rank", {"rank": None}))
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
                found.append(Suggestion(hit[1], " + ".join(d for d, _ in combo), estimate(hit[0]).peak_bytes))
        if found:
            return tuple(sorted(found, key=lambda s: s.peak_bytes)[:limit])
    return ()


def _require_gpu(spec: TrainingSpec) -> None:
    if not spec.gpu:
        raise ValueError("a fit check needs a GPU: name one (e.g. --gpu 4090) or a capacity (--gpu 24GB)")


def fit_report(spec: TrainingSpec) -> FitReport:
    """Fit verdict and searches for one spec; the spec must name a GPU."""
    _require_gpu(spec)
    b = estimate(spec)
    model = resolve_spec(spec).model
    rank_limit = _rank_limit(spec)
    return FitReport(
        method=b.spec.method, fits=bool(b.fits), peak_bytes=b.peak_bytes, headroom_bytes=b.headroom_bytes,
        max_batch=largest(spec, "batch", 1 << 16), max_seq=largest(spec, "seq", model.max_position),
        max_rank=largest(spec, "rank", rank_limit) if rank_limit else None,
        suggestions=() if b.fits else suggestions(spec), breakdown=b)


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
