"""Traced full-size steps: extrapolation from 1 and 2 layers is exact, and llama-7b's trace agrees
with the planner, without allocating the model: here for one method of each storage layout and
each special case (8-bit states, a k-bit base, full m×n moments, DoRA's forward transient, the
peak moving to the step, INT8 weights, a seeded projection); every method is traced by
`python bench/profiler_tables.py trace` (docs/validation.md's table)."""
import pytest

from planner import TrainingSpec, estimate
from planner.resolve import resolve_spec
from profiler import compare, trace
from profiler.rss import process_rss
from profiler.tracing import _trace_resolved, extrapolate, trace_layers

COMPONENTS = ("weights", "gradients", "optimizer_states", "projection", "adapters", "activations", "peak")


@pytest.fixture(scope="module")
def traced():
    cache = {}

    def get(method: str):
        if method not in cache:
            spec = TrainingSpec(model="llama-7b", method=method)
            cache[method] = (spec, trace(spec, history=False))
        return cache[method]
    return get


@pytest.mark.parametrize("method", ["adamw", "q-galore", "qlora"])
def test_extrapolation_from_one_and_two_layers_equals_the_full_trace(tiny4_config, method):
    """galore-8bit and q-galore move their peak from the optimizer step (1-2 layers) to the start
    of backward (4 layers): the phases are extrapolated separately, then the peak taken. qlora's
    NF4 codes are real (untouched) tensors inside the fake model (see profiler.build)."""
    rank = {"rank": 8} if method != "adamw" else {}
    r = _trace_resolved(resolve_spec(TrainingSpec(model=tiny4_config, method=method, batch=2, seq=64, **rank)))
    one, two, four = (trace_layers(r, n) for n in (1, 2, 4))
    assert extrapolate(one, two, 4) == four


TRACED = ["adamw", "adamw-8bit", "qlora", "lora-pro", "dora", "galore-8bit", "q-galore", "apollo"]


@pytest.mark.parametrize("method", TRACED)
def test_llama_7b_trace_within_5_percent_of_the_planner(traced, method):
    spec, result = traced(method)
    assert result.ok, result.message
    assert result.extrapolated and result.traced_layers == (1, 2) and result.layers == 32
    rows = compare(estimate(spec), result.measurement, mode="trace")
    off = {c: rows[c].relative_error for c in COMPONENTS if abs(rows[c].relative_error) > 0.05}
    assert not off, off


def test_7b_trace_is_fast_and_allocates_nothing(traced):
    traced("adamw")                                 # imports and first-use costs paid
    before = process_rss()["rss_bytes"]
    spec, result = traced("galore")
    assert result.seconds < 10
    assert result.measurement.components["weights"] > 13e9
    assert process_rss()["rss_bytes"] - before < 1 << 30


def test_trace_record_has_the_planner_shape(traced):
    _, result = traced("adamw")
    record = result.to_record()
    assert record["mode"] == "trace" and record["status"] == "ok"
    assert set(COMPONENTS[:-1]) <= set(record["measurement"]["components"])
    assert record["measurement"]["peak_bytes"] == max(record["measurement"]["phases"].values())
