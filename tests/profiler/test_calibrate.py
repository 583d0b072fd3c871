"""Calibration: device-memory constants fitted from CUDA burst records, read back by the planner.

The burst records below are constructed to test the fitting arithmetic only; they are not
measurements (no GPU ran here). Their reserved bytes are made with the planner's own allocator
model at a known working-memory fraction, which the fit must recover."""
import json
from dataclasses import replace

import pytest

from planner.allocator_calibration import cached_bytes
from planner.gpus import get_gpu
from planner.overhead import DEFAULT_OVERHEAD, overhead_for
from planner.spec import TrainingSpec
from profiler.calibrate import (calibrate, calibrate_with_notes, calibration_status, fit_overhead,
                                sample_from_record, working_set_of, write_calibration)
from profiler.history import entries, record

MIB = 1 << 20
SPEC = TrainingSpec(model="llama-60m", method="adamw", batch=8, seq=256)
H100 = "NVIDIA H100 80GB HBM3"


def _record(allocated_mib, reserved, context_mib, board=H100, status="ok", spec=SPEC):
    """A burst record: allocated and context in MiB, reserved in bytes."""
    return {"status": status, "device": f"cuda:0 ({board})", "versions": {"torch": "2.13.0"},
            "spec": spec.as_dict() if spec else None,
            "measurement": {"peak_bytes": allocated_mib * MIB,
                            "device_stats": {"max_reserved_bytes": reserved,
                                             "process_used_bytes": reserved + context_mib * MIB}}}


def _reserved_at(working_set: float, allocated_mib: int) -> int:
    return allocated_mib * MIB + cached_bytes(SPEC, replace(DEFAULT_OVERHEAD, working_set=working_set))


def test_sample_needs_a_successful_cuda_burst_with_both_figures():
    assert sample_from_record(_record(1000, 1100 * MIB, 600, status="oom")) is None
    assert sample_from_record({**_record(1000, 1100 * MIB, 600), "device": "cpu (x86_64)"}) is None
    s = sample_from_record(_record(1000, 1100 * MIB, 600))
    assert s["board"] == H100 and s["context"] == 600 * MIB
    assert s["allocated"] == 1000 * MIB and s["reserved"] == 1100 * MIB


def test_working_set_is_recovered_from_a_burst_the_model_made():
    for w in (0.3, 1.5):
        assert working_set_of(SPEC.as_dict(), 1000 * MIB, _reserved_at(w, 1000)) == pytest.approx(w, abs=1e-6)
    assert working_set_of(SPEC.as_dict(), 1000 * MIB, 1000 * MIB) == 0.0        # clipped, never negative
    assert working_set_of({"model": "llama-60m", "nonsense": 1}, 1, 2) is None
    assert working_set_of(SPEC.replace(alloc_conf="expandable_segments:True").as_dict(), 1, 2) is None


def test_fit_takes_medians_per_catalog_gpu():
    fitted = fit_overhead([_record(1000, _reserved_at(0.5, 1000), 600),
                           _record(1000, _reserved_at(0.9, 1000), 550),
                           _record(1000, _reserved_at(0.6, 1000), 700)])
    entry = fitted[get_gpu(H100).name]
    assert entry["context_bytes"] == 600 * MIB                           # median of 600, 550, 700
    assert entry["working_set"] == pytest.approx(0.6, abs=1e-4)          # median of 0.5, 0.9, 0.6
    assert entry["samples"] == 3 and entry["device"] == H100


def test_a_negative_measured_context_is_clipped_to_a_valid_entry():
    fitted = fit_overhead([_record(1000, 1100 * MIB, -50)])
    assert fitted[get_gpu(H100).name]["context_bytes"] == 0


def test_written_file_is_what_the_planner_reads(tmp_path):
    gpu = get_gpu(H100)
    assert calibration_status(gpu.name)["calibrated"] is False
    fitted = calibrate([_record(1000, _reserved_at(0.4, 1000), 600)])
    data = json.loads((tmp_path / "calibration.json").read_text())       # $MEMFIT_CALIBRATION
    assert data["version"] == 1 and data["gpus"][gpu.name] == fitted[gpu.name]
    o = overhead_for(gpu)
    assert o.calibrated and o.context_bytes == 600 * MIB and o.working_set == pytest.approx(0.4, abs=1e-4)
    status = calibration_status(gpu.name)
    assert status["calibrated"] and "calibrated on NVIDIA H100" in status["source"]
    assert calibration_status("4090")["source"] == DEFAULT_OVERHEAD.source
    assert entries(kind="calibration")[0].result["gpus"] == fitted


def test_an_invalid_entry_is_never_written(tmp_path):
    target = tmp_path / "calibration.json"
    calibrate([_record(1000, 1100 * MIB, 600)])
    before = target.read_text()
    for bad in ({"context_bytes": -1}, {"context_bytes": 2 ** 40}, {"context_bytes": 1, "working_set": float("nan")},
                {"context_bytes": 1, "surprise": 2}, {"workspace_bytes": 1}):
        with pytest.raises(ValueError):
            write_calibration({"h100-80gb": bad}, target)
    assert target.read_text() == before


def test_a_damaged_file_is_replaced_and_invalid_entries_are_dropped(tmp_path):
    target = tmp_path / "calibration.json"
    target.write_text("{not json")
    fitted, notes = calibrate_with_notes([_record(1000, 1100 * MIB, 600)], history=False)
    assert fitted and "replaced" in notes[0]
    data = json.loads(target.read_text())
    data["gpus"]["t4"] = {"context_bytes": "lots"}
    data["gpus"]["l4"] = {"context_bytes": 500 * MIB}
    target.write_text(json.dumps(data))
    _, notes = calibrate_with_notes([_record(1000, 1100 * MIB, 650)], history=False)
    kept = json.loads(target.read_text())["gpus"]
    assert "t4" not in kept and kept["l4"] == {"context_bytes": 500 * MIB}
    assert any("t4" in n and "context_bytes" in n for n in notes)


def test_calibrate_reads_cuda_bursts_from_the_history():
    record("burst", _record(1000, 1100 * MIB, 600), spec={"model": "llama-60m", "method": "adamw"}, status="ok")
    record("burst", {"status": "ok", "device": "cpu (x86_64)"}, spec={"model": "m", "method": "sgd"}, status="ok")
    fitted = calibrate()
    assert list(fitted) == [get_gpu(H100).name] and fitted[list(fitted)[0]]["samples"] == 1


def test_nothing_to_fit_writes_nothing(tmp_path):
    assert calibrate([]) == {}
    assert not (tmp_path / "calibration.json").exists()
