"""The traced fallback against a real CPU training step: an OPT model (a transformers
architecture memfit has no record for) trained for real. The planner's held bytes (from the
meta-device shapes) equal the measured ones exactly; its traced activations and the peak are
within 10 % (the same bound as every family's burst; they land within a few hundred bytes, the
fake trace replaying the very ops the real step runs)."""
import json

import pytest

from planner import TrainingSpec, estimate
from profiler import compare, run_burst
from tests.planner.test_traced import OPT
from tests.profiler._burst_checks import assert_equals_the_planner


@pytest.mark.parametrize("method, precision, checkpointing", [
    ("adamw", "fp32", "none"), ("lora", "bf16", "none"), ("adamw", "fp32", "full")])
def test_traced_model_burst_equals_the_planner(tmp_path, method, precision, checkpointing):
    path = tmp_path / "opt.json"
    path.write_text(json.dumps(OPT))
    spec = TrainingSpec(model=str(path), method=method, batch=2, seq=32, precision=precision,
                        checkpointing=checkpointing, rank=8 if method == "lora" else None)
    predicted = estimate(spec, kernels="cpu")
    assert predicted.activation_model == "traced"
    result = run_burst(spec, steps=1, warmup=1, history=False)
    assert result.ok, f"{result.status}: {result.message}"
    assert_equals_the_planner(compare(predicted, result.measurement), f"opt {method} {precision} {checkpointing}")
