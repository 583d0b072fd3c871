"""Bursts on a tiny LLaMA on CPU, every method, against the planner.

What must hold (the profiler's contract with the planner, docs/storage-contract.md):
- weights, gradients, optimizer states, projections and adapters: the planner's sizes equal the
  bytes of the distinct storages the real model and optimizer hold, exactly;
- activations: within 10 % of what MemTracker sees saved at the end of the forward;
- the step's peak: within 10 % of MemTracker's peak.
"""
import math

import pytest

from planner import METHOD_IDS, METHODS, TrainingSpec, estimate
from profiler import compare, run_burst
from profiler.validation import ADAPTER_CASES, adapter_case_spec
from tests.profiler._burst_checks import STATIC, assert_equals_the_planner, write_example

PRECISIONS = ("fp32", "bf16")

def spec_for(config: str, method: str, precision: str) -> TrainingSpec:
    """Rank 8 wherever there is a rank; projection refresh every 2 steps, so one measured step
    refreshes; QLoRA's frozen base is NF4 with bf16 adapters whatever the preset."""
    m = METHODS[method]
    rank = 8 if "rank" in m.options else None
    gap = 2 if "update_proj_gap" in m.options else None
    precision = "bf16" if method == "qlora" else precision
    return TrainingSpec(model=config, method=method, rank=rank, update_proj_gap=gap, batch=2, seq=32,
                        precision=precision)


@pytest.fixture(scope="module")
def burst(tiny_config):
    cache = {}

    def get(method: str, precision: str):
        key = (method, "bf16" if method == "qlora" else precision)
        if key not in cache:
            spec = spec_for(tiny_config, method, precision)
            cache[key] = (spec, run_burst(spec, steps=2, warmup=1, history=False))
        spec, result = cache[key]
        assert result.ok, f"{method}: {result.status}: {result.message}"
        return spec, result
    return get


def _cases(check: str):
    return [pytest.param(m, p) for p in PRECISIONS for m in METHOD_IDS if not (m == "qlora" and p == "fp32")]


@pytest.mark.parametrize("method, precision", _cases("static"))
def test_held_bytes_equal_the_planner_exactly(burst, method, precision):
    spec, result = burst(method, precision)
    comparison = compare(estimate(spec), result.measurement)
    wrong = {c: (comparison[c].predicted_bytes, comparison[c].measured_bytes)
             for c in STATIC if comparison[c].abs_error}
    assert not wrong, f"{method} {precision}: (predicted, measured) {wrong}"


@pytest.mark.parametrize("method, precision", _cases("activations"))
def test_activations_within_10_percent(burst, method, precision):
    spec, result = burst(method, precision)
    row = compare(estimate(spec), result.measurement)["activations"]
    assert abs(row.relative_error) <= 0.10, row


@pytest.mark.parametrize("method, precision", _cases("peak"))
def test_peak_within_10_percent(burst, method, precision):
    spec, result = burst(method, precision)
    row = compare(estimate(spec), result.measurement)["peak"]
    assert abs(row.relative_error) <= 0.10, row


@pytest.mark.parametrize("method", METHOD_IDS)
def test_burst_record_is_complete(burst, method):
    spec, result = burst(method, "fp32")
    m = result.measurement
    assert len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses)
    assert set(m.phases) == {"forward", "backward", "optimizer_step"}
    assert m.peak_bytes == max(m.phases.values()) == m.categories["total"]
    held = sum(m.components[c] for c in ("weights", "optimizer_states", "projection", "adapters"))
    assert m.peak_bytes >= held + m.components["activations"]
    assert m.components["buffers"] > 0            # rotary inv_freq, reported apart from the weights
    assert m.device_stats["peak_rss_bytes"] >= m.device_stats["rss_bytes"] > 0
    assert result.tokens_per_second > 0 and result.device.startswith("cpu")
    record = result.to_record()
    assert record["mode"] == "burst" and record["spec"]["method"] == method


@pytest.mark.parametrize("method", ["adamw", "galore-8bit", "q-galore"])
def test_layerwise_updates_hold_one_gradient_as_the_planner_says(tiny_config, method):
    spec = spec_for(tiny_config, method, "fp32").replace(layerwise=True)
    result = run_burst(spec, steps=2, warmup=1, history=False)
    assert result.ok, result.message
    comparison = compare(estimate(spec), result.measurement)
    assert comparison["gradients"].predicted_bytes < estimate(spec.replace(layerwise=False)).sizes.gradients
    assert all(comparison[c].abs_error == 0 for c in STATIC), comparison.to_records()


@pytest.mark.parametrize("method", ["adamw", "lora"])
def test_full_checkpointing_activations_and_peak(tiny_config, method):
    spec = spec_for(tiny_config, method, "fp32").replace(checkpointing="full")
    result = run_burst(spec, steps=1, warmup=1, history=False)
    assert result.ok, result.message
    comparison = compare(estimate(spec), result.measurement)
    assert abs(comparison["activations"].relative_error) <= 0.10
    assert abs(comparison["peak"].relative_error) <= 0.10


FAMILY_CASES = [(f, m) for f in sorted(__import__("planner.families", fromlist=["FAMILIES"]).FAMILIES)
                for m in ("adamw", "lora")]


@pytest.mark.parametrize("family, method", FAMILY_CASES)
def test_every_family_burst_equals_the_planner(tmp_path, family, method):
    """Each family record's tiny example, trained for real (full fine-tuning in fp32, LoRA on
    peft's default targets in bf16): held bytes equal the planner exactly, activations and the
    peak within 10 %."""
    spec = TrainingSpec(model=write_example(tmp_path, family), method=method, batch=2, seq=32,
                        precision="fp32" if method == "adamw" else "bf16", rank=8 if method == "lora" else None)
    result = run_burst(spec, steps=1, warmup=1, history=False)
    assert result.ok, f"{family} {method}: {result.status}: {result.message}"
    assert_equals_the_planner(compare(estimate(spec, kernels="cpu"), result.measurement), f"{family} {method}")


@pytest.fixture(scope="module")
def adapter_burst(tiny_config):
    """LoRA as people configure it and the new methods' options (`profiler.validation.ADAPTER_CASES`),
    sized with the CPU kernels (dropout noise in D)."""
    cache = {}

    def get(case: str):
        if case not in cache:
            spec = adapter_case_spec(tiny_config, case)
            cache[case] = (spec, run_burst(spec, steps=1, warmup=1, history=False))
        spec, result = cache[case]
        assert result.ok, f"{case}: {result.status}: {result.message}"
        return spec, compare(estimate(spec, kernels="cpu"), result.measurement), result
    return get


@pytest.mark.parametrize("case", ADAPTER_CASES)
def test_adapter_options_equal_the_planner(adapter_burst, case):
    """Held bytes exactly (an LLM.int8 base's per-row absmax SCB included, wherever
    bitsandbytes keeps it); activations and the peak within 10 % (they land within a few bytes)."""
    assert_equals_the_planner(adapter_burst(case)[1], case)


def test_ggpo_step_temporaries(adapter_burst):
    """LoRA-GGPO's perturbation removal and gradient-norm update run in the optimizer step
    phase, beside every gradient: that phase within 2 % (12 m n fp32 of the widest layer, plus
    the next layer's ε in the base dtype, docs/storage-contract.md)."""
    spec, _, result = adapter_burst("ggpo bf16 adapters, all linears")
    b = estimate(spec, kernels="cpu")
    predicted = b.phases["optimizer_step"] - b.components.overhead
    assert abs(predicted / result.measurement.phases["optimizer_step"] - 1) <= 0.02
