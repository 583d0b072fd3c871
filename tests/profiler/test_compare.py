"""compare(prediction, measurement): per-component errors, named as the planner names them."""
import pytest

from planner import TrainingSpec, estimate
from profiler import COMPARED, Measurement, compare
from profiler.compare import ComponentError, predicted_bytes


@pytest.fixture(scope="module")
def prediction():
    return estimate(TrainingSpec(model="llama-60m", method="galore", gpu="4090"))


def _measured(prediction, scale=1.0, **extra):
    sizes = prediction.sizes.as_dict()
    comps = {k: int(v * scale) for k, v in sizes.items() if k not in ("overhead", "temporaries")}
    peak = prediction.peak_bytes - prediction.components.overhead
    return Measurement(components={**comps, "buffers": 64}, peak_bytes=int(peak * scale), **extra)


def test_exact_measurement_gives_zero_errors(prediction):
    c = compare(prediction, _measured(prediction))
    assert c.method == "galore" and c.mode == "burst"
    assert c.components == tuple(n for n in COMPARED if n != "device_peak")
    assert all(row.abs_error == 0 and row.relative_error == 0 for row in c.rows)


def test_errors_are_predicted_minus_measured_over_measured(prediction):
    c = compare(prediction, _measured(prediction, scale=0.5), mode="trace")
    row = c["weights"]
    assert row.abs_error == row.predicted_bytes - row.measured_bytes > 0
    assert row.relative_error == pytest.approx(1.0, abs=1e-6)
    assert c.to_records()[0] == {"method": "galore", "mode": "trace", "component": "weights",
                                 "predicted_bytes": row.predicted_bytes, "measured_bytes": row.measured_bytes,
                                 "abs_error": row.abs_error, "relative_error": row.relative_error}


def test_peak_excludes_the_planners_runtime_overhead_and_device_peak_includes_it(prediction):
    predicted = predicted_bytes(prediction)
    assert prediction.components.overhead > 0
    assert predicted["peak"] == prediction.peak_bytes - prediction.components.overhead
    assert predicted["device_peak"] == prediction.peak_bytes
    m = _measured(prediction, device_stats={"process_used_bytes": prediction.peak_bytes + 10})
    assert compare(prediction, m)["device_peak"].abs_error == -10


def test_zero_measured_bytes():
    assert ComponentError("adapters", 0, 0).relative_error == 0.0
    assert ComponentError("adapters", 5, 0).relative_error is None


def test_unknown_component_raises_key_error_naming_the_compared_ones(prediction):
    with pytest.raises(KeyError, match="weights"):
        compare(prediction, _measured(prediction))["kv_cache"]
