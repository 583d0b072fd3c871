"""Bursts on a tiny LLaMA on CPU, every method, against the planner.

What must hold (the profiler's contract with the planner, docs/storage-contract.md):
- weights, gradients, optimizer states, projections and adapters: the planner's sizes equal the
  bytes of the distinct storages the real model and optimizer hold, exactly;
- activations: within 10 % of what MemTracker sees saved at the end of the forward;
- the step's peak: within 10 % of MemTracker's peak.
Known planner/lowrank discrepancies are `xfail(strict=True)` with their cause (KNOWN below), so
a fix shows up as an unexpected pass.
"""
import math

import pytest

from planner import METHOD_IDS, METHODS, TrainingSpec, estimate
from profiler import compare, run_burst

STATIC = ("weights", "gradients", "optimizer_states", "projection", "adapters")
PRECISIONS = ("fp32", "bf16")

_LOGITS = ("planner/peak.py: the backward-start instant adds every gradient outside the layer stack "
           "(embedding, final norm, lm_head: 512,256 B here) to the activations' backward peak, which "
           "already holds both 4·b·s·V logits-gradient temporaries; measured, no gradient is alive at "
           "that instant (the embedding's forms at the end of backward), so the planner over-predicts")
_DEQUANT = ("planner/transients.py: memfit's 8-bit optimizers dequantise the plain (non-projected) "
            "parameters' two moments to fp32 bucket by bucket (lowrank.projected_adamw "
            "FOREACH_BUCKET_NUMEL) plus AdamW's temporaries; the planner counts one fp32 copy of the "
            "largest matrix, so the optimizer step is under-predicted")
_RMS = ("planner/rules.py: transformers' Adafactor keeps `RMS` as a 0-d fp32 tensor per parameter "
        "(4 B x 21 parameters = 84 B here); the planner counts it as a Python float")

#: (method, precision, check) -> reason
KNOWN = {("adafactor", p, "static"): _RMS for p in PRECISIONS}
KNOWN |= {(m, "fp32", "peak"): _LOGITS for m in ("adamw", "adamw-8bit", "adafactor", "sgd", "galore",
                                                 "fira", "gradnormlorp", "galore-dct", "apollo", "apollo-mini")}
KNOWN |= {(m, "bf16", "peak"): _LOGITS for m in ("adamw", "adamw-8bit", "sgd", "galore", "fira",
                                                 "gradnormlorp", "galore-dct", "apollo", "apollo-mini")}
KNOWN |= {(m, p, "peak"): _DEQUANT for m in ("galore-8bit", "q-galore", "gradnormlorp-8bit") for p in PRECISIONS}
KNOWN.pop(("adamw", "fp32", "peak"))     # 4.3 % over: inside the 10 % band


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


def _mark(method: str, precision: str, check: str):
    reason = KNOWN.get((method, precision, check))
    return pytest.param(method, precision, marks=pytest.mark.xfail(strict=True, reason=reason)) \
        if reason else pytest.param(method, precision)


def _cases(check: str):
    return [_mark(m, p, check) for p in PRECISIONS for m in METHOD_IDS if not (m == "qlora" and p == "fp32")]


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


_INT8_LAYERWISE = ("lowrank/layerwise.py: LayerwiseOptimizer hooks only parameters that require a "
                   "gradient; Q-GaLore's `weight_int8` does not (its gradient accumulates in the "
                   "layer's `weight_grad`), so the INT8 weights are never stepped layer-wise: no "
                   "projected states or projections appear and `weight_grad` keeps accumulating")


@pytest.mark.parametrize("method", ["adamw", "galore-8bit", pytest.param(
    "q-galore", marks=pytest.mark.xfail(strict=True, reason=_INT8_LAYERWISE))])
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
