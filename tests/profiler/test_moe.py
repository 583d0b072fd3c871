"""Mixture-of-experts families against real CPU bursts and full-size traces.

Bursts train each family's tiny example (fp32; 4 experts, top-2) with memfit's projected
optimizers on the fused expert tensors and peft LoRA on them (target_parameters): held bytes
equal the planner exactly, activations and the peak within 10 %. Traces run one full-size step of
a catalog model under FakeTensorMode (bf16, batch 1, seq 512), within 3 % of the planner per
component and at the peak; fake tensors carry no routing values and grouped_mm sizes nothing by
an expert's load, so no routing needs forcing there.
"""
import pytest

from planner import METHODS, TrainingSpec, estimate
from profiler import compare, run_burst, trace
from tests.profiler._burst_checks import STATIC, assert_equals_the_planner, write_example

EXPERT_LORA = "q_proj,v_proj,experts.gate_up_proj,experts.down_proj"
# the projected layouts that differ on experts (8-bit states, Fira's limiter, INT8 weights,
# APOLLO's seeded basis); the rest share their storage rules (bench/moe_tables.py runs them all)
BURSTS = [("qwen3_moe", m, {}) for m in ("galore-8bit", "fira", "q-galore", "apollo")] + [
    ("mixtral", "galore", {}), ("qwen2_moe", "apollo-mini", {}),
    *[(f, "lora", {"lora_targets": EXPERT_LORA}) for f in ("mixtral", "qwen2_moe")],
    ("qwen3_moe", "qlora", {"lora_targets": EXPERT_LORA})]


@pytest.mark.slow
@pytest.mark.parametrize("family, method, extra", BURSTS,
                         ids=[f"{f}-{m}{'-experts' if e else ''}" for f, m, e in BURSTS])
def test_moe_burst_equals_the_planner(tmp_path, family, method, extra):
    m = METHODS[method]
    spec = TrainingSpec(model=write_example(tmp_path, family), method=method, batch=2, seq=32,
                        precision="bf16" if method == "qlora" else "fp32",
                        rank=8 if "rank" in m.options else None,
                        update_proj_gap=2 if "update_proj_gap" in m.options else None, **extra)
    result = run_burst(spec, steps=2, warmup=1, history=False)
    assert result.ok, f"{family} {method}: {result.status}: {result.message}"
    assert_equals_the_planner(compare(estimate(spec, kernels="cpu"), result.measurement), f"{family} {method}")


TRACES = [("mixtral-8x7b", "lora", {"lora_targets": EXPERT_LORA}),
          ("qwen1.5-moe-a2.7b", "fira", {}), ("qwen3-30b-a3b", "galore-8bit", {})]


@pytest.mark.slow
@pytest.mark.parametrize("model, method, extra", TRACES, ids=[f"{m}-{k}" for m, k, _ in TRACES])
def test_full_size_trace_within_3_percent(model, method, extra):
    spec = TrainingSpec(model=model, method=method, **extra)
    result = trace(spec, history=False)
    assert result.ok, result.message
    rows = compare(estimate(spec), result.measurement, mode="trace")
    off = {c: rows[c].relative_error for c in STATIC + ("activations", "peak")
           if abs(rows[c].relative_error) > 0.03}
    assert not off, off
