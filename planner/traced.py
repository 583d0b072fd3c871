"""Activations of an architecture memfit has no family record for: traced, fitted, cached.

The one planner module that runs the profiler (imported only when such a model is sized; a test
keeps every other planner module free of it). `activation_memory` answers what
`planner.activations.activation_memory` answers for a record, from measurements of the real
transformers model under FakeTensorMode and MemTracker (`profiler.activation_trace`): the spec's
dtype, attention, checkpointing and adapters, nothing allocated.

Every byte count of a step is, at a fixed depth, a polynomial in batch b and sequence s:
affine in b (every activation is per sample, or shared by the batch: rotary tables, position
ids), of degree 2 in s (s·s scores and masks of eager attention, materialised masks), affine in
the depth L (identical layers: each adds what the traced second layer adds) and in an
adapter's rank. So memfit traces a 2-layer cut of the model at six (b, s) points (and, with
adapters, at two ranks), fits `c0 + c1·s + c2·s² + b·(c3 + c4·s + c5·s²)` through them
exactly (rational arithmetic on integer bytes) for every quantity and for the bytes alive
after every op of the backward (the worst op changes with the sizes, so the maximum is taken
after the fit), and evaluates any (b, s, L, rank) from the fit: fit's searches over batch,
sequence and rank need no new trace. The points lie in the requested sequence's regime (no
`sliding_window`- or chunk-like threshold of the config between them and it: masks appear
past those). The fit is cached on disk (`planner.cache`) by the config's fields, the
activation settings and the library versions.
"""
from __future__ import annotations

import functools
import json
import re
from fractions import Fraction

from . import cache
from .activations import ActivationBreakdown
from .activations import _check as check_request
from .activations import _compute_bytes as compute_bytes
from .dtypes import canonical_dtype
from .models import ModelConfig

__all__ = ["activation_memory", "fit_points", "weights", "evaluate", "evaluated", "TRACE_VERSION"]

#: bump when what is measured changes, so older cached fits are not read
TRACE_VERSION = 1
#: batch 1 is no point: size-1 dimensions make some copies free (a transpose of a
#: (1, s, h) tensor is contiguous), so the op sequence and its bytes differ there
BATCHES = (2, 3)
SEQ_STEPS = (8, 16, 24)          # points above the regime's start, in tokens
_BASIS = (lambda b, s: 1, lambda b, s: s, lambda b, s: s * s,
          lambda b, s: b, lambda b, s: b * s, lambda b, s: b * s * s)
#: config fields that are token thresholds past which attention changes (a mask appears)
_THRESHOLD = re.compile(r"(?:^|_)(?:window|chunk)(?:_size)?$")
#: adapters are traced at two ranks: every rank-sized tensor (A's output and its gradient) is
#: affine in the rank, so any rank (a fit's rank search) is their interpolation
RANKS = (8, 16)
_fits: dict[str, dict] = {}      # in-process: a fit's searches read the disk once


def activation_memory(model: ModelConfig, *, batch: int, seq: int, dtype: str = "bf16",
                      attention: str = "sdpa", checkpointing: str = "none",
                      lora_rank: int | None = None, lora_dropout: float = 0.0,
                      lora_dtype: str | None = None, dropout: float | None = None,
                      kernels: str = "cuda", lora_targets: tuple[str, ...] | None = None
                      ) -> ActivationBreakdown:
    """`planner.activations.activation_memory` for a model without a family record (the
    record's arguments; `dropout` must stay None: the config's own dropouts are traced)."""
    _check(model, batch, seq, dtype, attention, checkpointing, kernels, lora_rank, dropout)
    settings = {"dtype": canonical_dtype(dtype), "attention": attention,
                "checkpointing": checkpointing, "kernels": kernels,
                "lora": None if lora_rank is None else {
                    "dropout": float(lora_dropout), "dtype": canonical_dtype(lora_dtype or dtype),
                    "targets": sorted(lora_targets) if lora_targets is not None else None}}
    points = fit_points(model, seq)
    key = {"config": model.hf_config, "settings": settings, "points": points,
           "ranks": list(RANKS) if lora_rank is not None else None, "version": TRACE_VERSION,
           "libraries": cache.library_versions("torch", "transformers", "peft", "accelerate")}
    traced, by_rank = _measured(model, settings, key)
    at = {r: evaluated(points, rows, batch, seq) for r, rows in by_rank.items()}
    q = at[None] if lora_rank is None else _at_rank(at[RANKS[0]], at[RANKS[1]], lora_rank)
    return _breakdown(_deeper(q, model.num_layers - traced), model.num_layers, checkpointing)


def _at_rank(low: dict, high: dict, rank: int) -> dict:
    """Every quantity (a series element by element) at `rank`, on the line through `RANKS`."""
    (r0, r1) = RANKS

    def line(a, b):
        return round(a + Fraction(rank - r0, r1 - r0) * (b - a))
    return {k: [line(a, b) for a, b in zip(v, high[k])] if isinstance(v, list) else line(v, high[k])
            for k, v in low.items()}


def evaluated(points: list[list[int]], rows: list[dict], batch: int, seq: int) -> dict:
    """Every measured quantity at (batch, seq), from its values at the points; a series (one
    value per op) element by element."""
    w = weights(points, batch, seq)
    out = {}
    for q, first in rows[0].items():
        if isinstance(first, list):
            out[q] = [evaluate(w, [row[q][i] for row in rows]) for i in range(len(first))]
        else:
            out[q] = evaluate(w, [row[q] for row in rows])
    return out


def _check(model, batch, seq, dtype, attention, checkpointing, kernels, lora_rank, dropout) -> None:
    """The record path's checks, and what a CPU trace cannot do."""
    check_request(model, batch, seq, attention, checkpointing, kernels, lora_rank)
    compute_bytes(dtype, "dtype")
    if attention == "flash":
        raise ValueError(f"{model.name} has no memfit record and is traced on CPU, where "
                         "FlashAttention-2 does not run: use attention='sdpa' (its flash kernels "
                         "save the same tensors)")
    if dropout is not None:
        raise ValueError(f"{model.name} has no memfit record: its activations are traced with "
                         "the config's own dropout probabilities; change them in the config")


def fit_points(model: ModelConfig, seq: int) -> list[list[int]]:
    """Six (batch, seq) points in `seq`'s regime: above the largest token threshold of the
    config at or below `seq`, below the next (or the exact point when the regime is narrower
    than the steps)."""
    thresholds = sorted({v for k, v in model.hf_config.items() if _THRESHOLD.search(str(k))
                         and isinstance(v, int) and not isinstance(v, bool) and v > 0})
    lo = max([t for t in thresholds if t <= seq], default=0)
    hi = min([t for t in thresholds if t > seq] + [model.max_position + 1])
    seqs = [lo + step for step in SEQ_STEPS]
    if seqs[-1] >= hi:
        return [[b, seq] for b in BATCHES]           # a narrow regime: measure this very seq
    return [[b, s] for b in BATCHES for s in seqs]


@functools.lru_cache(maxsize=64)
def _inverse(points: tuple[tuple[int, int], ...]) -> tuple[tuple[Fraction, ...], ...]:
    """The inverse of the basis evaluated at the points (exact rationals, Gauss-Jordan)."""
    basis = _basis_for(points)
    n = len(basis)
    rows = [[Fraction(f(b, s)) for f in basis] + [Fraction(int(i == j)) for j in range(n)]
            for i, (b, s) in enumerate(points)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [x / rows[col][col] for x in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                rows[r] = [a - rows[r][col] * c for a, c in zip(rows[r], rows[col])]
    return tuple(tuple(row[n:]) for row in rows)


def _basis_for(points) -> tuple:
    """Six points: the full basis; two points at one sequence (a narrow regime): 1 and b."""
    return _BASIS if len(points) == len(_BASIS) else (_BASIS[0], _BASIS[3])


def weights(points: list[list[int]], batch: int, seq: int) -> list[Fraction]:
    """w with q(batch, seq) = Σ w_j q(point_j) for every q in the basis' span: the fit through
    the points, evaluated at (batch, seq), as weights on the measured values."""
    key = tuple(map(tuple, points))
    if len(key) != len(_BASIS) and seq != key[0][1]:
        raise ValueError(f"internal: points at seq {key[0][1]} evaluated at seq {seq}")
    at = [Fraction(f(batch, seq)) for f in _basis_for(key)]
    inverse = _inverse(key)
    return [sum(a * inverse[i][j] for i, a in enumerate(at)) for j in range(len(key))]


def evaluate(w: list[Fraction], values: list[int]) -> int:
    """A byte count from its values at the points and the weights of (batch, seq)."""
    return round(sum(wj * v for wj, v in zip(w, values)))


def _measured(model: ModelConfig, settings: dict, key: dict) -> tuple[int, dict]:
    """(traced layers, {rank (None without adapters): one measurement per point}): from memory,
    the disk cache, or new traces."""
    digest = cache.key_hash(key)
    if digest not in _fits:
        stored = cache.read("activations", key)
        if stored is None:
            measured = {}
            for rank in key["ranks"] or [None]:
                traced, rows = _trace(model, settings, rank, key["points"])
                measured[str(rank)] = rows
            stored = {"layers": traced, "measured": _aligned(measured)}
            cache.write("activations", key, stored)
        by_rank = {None if r == "None" else int(r): rows for r, rows in stored["measured"].items()}
        _fits[digest] = (stored["layers"], by_rank)
    return _fits[digest]


def _aligned(measured: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Series have one value per op, the same ops at every point and rank; where they do not
    (the sizes changed the code path), only each series' maximum is fitted."""
    out = {r: [dict(row) for row in rows] for r, rows in measured.items()}
    every = [row for rows in out.values() for row in rows]
    for q, first in every[0].items():
        if isinstance(first, list) and len({len(row[q]) for row in every}) > 1:
            for row in every:
                row[q] = [max(row[q], default=0)]
    return out


def _spec(model: ModelConfig, settings: dict, rank: int | None):
    """The TrainingSpec the profiler builds: the config (kept in the cache folder) with the
    activation settings; full fine-tuning or LoRA."""
    from .spec import TrainingSpec
    folder = cache.cache_dir() / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cache.key_hash(model.hf_config)}.json"
    if not path.exists():
        path.write_text(json.dumps(model.hf_config))
    d, lora = settings["dtype"], settings["lora"]
    common = dict(model=str(path), precision="fp32", weights=d, batch=1, seq=8,
                  attention=settings["attention"], checkpointing=settings["checkpointing"])
    if lora is None:
        return TrainingSpec(method="adamw", grads=d, states=d, **common)
    targets = lora["targets"] or sorted({p.module.rpartition(".")[2] for p in model.selected})
    return TrainingSpec(method="lora", rank=rank, lora_dropout=lora["dropout"],
                        adapter_dtype=lora["dtype"], lora_targets=",".join(targets), **common)


def _trace(model: ModelConfig, settings: dict, rank: int | None, points) -> tuple[int, list[dict]]:
    from profiler.activation_trace import measure_activations    # imports torch
    from .resolve import resolve_spec
    try:
        r = resolve_spec(_spec(model, settings, rank))
    except ValueError as err:
        raise ValueError(f"{model.name}: memfit has no record for model_type "
                         f"{model.model_type!r}, so its activations are traced, but: {err}") from None
    try:
        return measure_activations(r, [tuple(p) for p in points], settings["kernels"])
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - an architecture the fake trace cannot run
        raise ValueError(f"{model.name}: memfit has no record for model_type "
                         f"{model.model_type!r} and could not trace its activations under "
                         f"FakeTensorMode ({type(err).__name__}: {str(err)[:200]}); a family record "
                         "(planner/families) would size it") from None


#: quantities a deeper model does not change: before the stack, and the first layer's backward
#: (every later layer is released by then)
_DEPTH_FREE = ("stack_start", "end", "layer")


def _deeper(q: dict, extra: int) -> dict[str, int]:
    """The quantities `extra` identical layers deeper (each adds one `layer`), a series by its
    worst op."""
    def deeper(key, v):
        return v if key in _DEPTH_FREE else v + extra * q["layer"]
    return {k: max((deeper(k, x) for x in v), default=0) if isinstance(v, list) else deeper(k, v)
            for k, v in q.items()}


def _breakdown(q: dict[str, int], layers: int, checkpointing: str) -> ActivationBreakdown:
    """The measured quantities as the planner's activation fields: the stack between the first
    layer's start and the last one's end, the head up to the output embeddings, the loss after;
    with checkpointing, one layer's recomputation is what the top layer's backward adds to what
    is held."""
    stack = q["stack_end"] - q["stack_start"]
    # (a tensor alive at the stack's end may be gone when the head is done: the loss absorbs it)
    head = max(0, q["head_end"] - q["stack_end"])
    logits = q["total"] - q["stack_end"] - head
    if checkpointing == "full":
        recompute = per_layer = max(0, q["top"] - q["stack_end"])
    else:
        recompute, per_layer = 0, q["layer"]
    return ActivationBreakdown(per_layer=per_layer, layers=stack, recompute=recompute,
                               embeddings=q["stack_start"], head=head, logits=logits, lora=0,
                               total=q["total"], peak_backward=max(q["start"], q["top"], q["end"]),
                               source="traced", instants=(q["start"], q["top"], q["end"]))
