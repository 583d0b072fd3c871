"""Calibration: overhead constants fitted from CUDA burst records, read back by the planner.

The burst records below are constructed to test the fitting arithmetic only; they are not
measurements (no GPU ran here)."""
import json

from planner.gpus import get_gpu
from planner.overhead import DEFAULT_OVERHEAD, overhead_for
from profiler.calibrate import calibrate, calibration_status, fit_overhead, sample_from_record
from profiler.history import entries, record

MIB = 1 << 20


def _record(peak_mib, reserved_mib, process_mib, board="NVIDIA H100 80GB HBM3", status="ok"):
    return {"status": status, "device": f"cuda:0 ({board})", "versions": {"torch": "2.13.0"},
            "measurement": {"peak_bytes": peak_mib * MIB,
                            "device_stats": {"max_reserved_bytes": reserved_mib * MIB,
                                             "process_used_bytes": process_mib * MIB}}}


def test_sample_needs_a_successful_cuda_burst_with_both_figures():
    assert sample_from_record(_record(1000, 1100, 1700, status="oom")) is None
    assert sample_from_record({**_record(1000, 1100, 1700), "device": "cpu (x86_64)"}) is None
    s = sample_from_record(_record(1000, 1100, 1700))
    assert s["board"] == "NVIDIA H100 80GB HBM3"
    assert abs(s["slack"] - 0.1) < 1e-12 and s["fixed"] == 600 * MIB


def test_fit_takes_medians_per_catalog_gpu():
    fitted = fit_overhead([_record(1000, 1100, 1700), _record(2000, 2100, 2650), _record(4000, 4400, 5000)])
    gpu = get_gpu("NVIDIA H100 80GB HBM3").name
    entry = fitted[gpu]
    assert entry["allocator_slack"] == 0.1                    # median of 0.10, 0.05, 0.10
    assert entry["context_bytes"] + entry["workspace_bytes"] == 600 * MIB   # median of 600, 550, 600
    assert entry["samples"] == 3 and entry["device"] == "NVIDIA H100 80GB HBM3"


def test_written_file_is_what_the_planner_reads(tmp_path):
    gpu = get_gpu("NVIDIA H100 80GB HBM3")
    assert calibration_status(gpu.name)["calibrated"] is False
    fitted = calibrate([_record(1000, 1100, 1700)])
    data = json.loads((tmp_path / "calibration.json").read_text())       # $MEMFIT_CALIBRATION
    assert data["version"] == 1 and data["gpus"][gpu.name] == fitted[gpu.name]
    o = overhead_for(gpu)
    assert o.calibrated and o.allocator_slack == 0.1
    assert o.context_bytes + o.workspace_bytes == 600 * MIB
    status = calibration_status(gpu.name)
    assert status["calibrated"] and "calibrated on NVIDIA H100" in status["source"]
    assert calibration_status("4090")["source"] == DEFAULT_OVERHEAD.source
    assert entries(kind="calibration")[0].result["gpus"] == fitted


def test_calibrate_reads_cuda_bursts_from_the_history():
    record("burst", _record(1000, 1100, 1700), spec={"model": "llama-60m", "method": "adamw"}, status="ok")
    record("burst", {"status": "ok", "device": "cpu (x86_64)"}, spec={"model": "m", "method": "sgd"}, status="ok")
    fitted = calibrate()
    assert list(fitted) == [get_gpu("NVIDIA H100 80GB HBM3").name] and fitted[list(fitted)[0]]["samples"] == 1


def test_nothing_to_fit_writes_nothing(tmp_path):
    assert calibrate([]) == {}
    assert not (tmp_path / "calibration.json").exists()
