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
    assert c.components == tuple(n for n in COMPARED if n not in ("host", "allocated", "reserved", "device_peak"))
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
    d = prediction.device
    assert prediction.components.overhead > 0
    assert predicted["peak"] == prediction.peak_bytes - prediction.components.overhead
    assert predicted["device_peak"] == d.reserved + d.context        # nvidia-smi on a device with room
    m = _measured(prediction, device_stats={"process_used_bytes": d.reserved + d.context + 10})
    assert compare(prediction, m)["device_peak"].abs_error == -10


def test_cuda_measurements_compare_allocated_and_reserved(prediction):
    """A CUDA burst reports the allocator's counters: max_memory_allocated as its peak and
    max_memory_reserved; the planner's figures for both are compared with them."""
    d = prediction.device
    m = _measured(prediction, device_stats={"max_reserved_bytes": d.reserved - 100})
    m = Measurement(**{**m.to_record(), "peak_bytes": d.allocated + 7})
    c = compare(prediction, m)
    assert c["allocated"].abs_error == -7 and c["reserved"].abs_error == 100
    assert d.allocated >= prediction.peak_bytes - prediction.components.overhead


def test_zero_measured_bytes():
    assert ComponentError("adapters", 0, 0).relative_error == 0.0
    assert ComponentError("adapters", 5, 0).relative_error is None


def test_unknown_component_raises_key_error_naming_the_compared_ones(prediction):
    with pytest.raises(KeyError, match="weights"):
        compare(prediction, _measured(prediction))["kv_cache"]
