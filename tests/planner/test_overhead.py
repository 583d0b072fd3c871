"""The calibration file the planner reads: every bad shape is ignored with a message that names
the file, the field and what it must be; the defaults are used and the estimate still works."""
import json

import pytest

from planner import TrainingSpec, estimate
from planner.cli import main
from planner.gpus import get_gpu
from planner.overhead import DEFAULT_OVERHEAD, overhead_for, validate_entry

MIB = 1 << 20
GOOD = {"context_bytes": 700 * MIB, "workspace_bytes": 8 * MIB, "working_set": 0.5, "device": "NVIDIA H100",
        "date": "2026-11-30", "samples": 3, "torch": "2.13.0"}


@pytest.fixture
def calibration(tmp_path, monkeypatch):
    path = tmp_path / "calibration.json"
    monkeypatch.setenv("MEMFIT_CALIBRATION", str(path))

    def write(content):
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path
    return write


def _file(entry):
    return {"version": 1, "gpus": {"h100-80gb": entry}}


def test_a_valid_entry_is_used(calibration):
    calibration(_file(GOOD))
    o = overhead_for(get_gpu("h100"))
    assert o.calibrated and not o.problems
    assert (o.context_bytes, o.workspace_bytes, o.working_set) == (700 * MIB, 8 * MIB, 0.5)
    b = estimate(TrainingSpec(model="llama-60m", gpu="h100"))
    assert b.device.context == 700 * MIB and b.to_record()["overhead_calibrated"] is True


def test_an_entry_of_another_gpu_is_not_a_problem_here(calibration):
    calibration({"version": 1, "gpus": {"t4": {"context_bytes": -5}}})
    assert overhead_for(get_gpu("h100")) == DEFAULT_OVERHEAD


@pytest.mark.parametrize("content, problem", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ({"gpus": {}}, "version must be 1"),
    ({"version": 2, "gpus": {}}, "version must be 1"),
    ({"version": 1}, "\"gpus\" object"),
    ({"version": 1, "gpus": [1]}, "\"gpus\" object"),
    (_file([700]), "must be an object of fields"),
    (_file({"working_set": 0.5}), "field context_bytes is missing"),
    (_file({**GOOD, "context_bytes": -5}), "field context_bytes must be a whole number of bytes from 0 to 8 GiB, got -5"),
    (_file({**GOOD, "context_bytes": 9 * 2 ** 30}), "field context_bytes must be"),
    (_file({**GOOD, "context_bytes": 7.5e8}), "field context_bytes must be"),
    (_file({**GOOD, "context_bytes": "700MiB"}), "field context_bytes must be"),
    (_file({**GOOD, "context_bytes": True}), "field context_bytes must be"),
    (_file({**GOOD, "context_bytes": None}), "field context_bytes must be"),
    (_file({**GOOD, "workspace_bytes": -1}), "field workspace_bytes must be"),
    ('{"version": 1, "gpus": {"h100-80gb": {"context_bytes": 1, "working_set": NaN}}}', "field working_set must be a number from 0 to 4, got nan"),
    ('{"version": 1, "gpus": {"h100-80gb": {"context_bytes": 1, "working_set": Infinity}}}', "field working_set must be"),
    (_file({**GOOD, "working_set": -0.1}), "field working_set must be"),
    (_file({**GOOD, "working_set": 5}), "field working_set must be"),
    (_file({**GOOD, "working_set": "0.5"}), "field working_set must be"),
    (_file({**GOOD, "samples": 0}), "field samples must be"),
    (_file({**GOOD, "date": "30/11/2026"}), "field date must be a date as YYYY-MM-DD"),
    (_file({**GOOD, "device": ""}), "field device must be"),
    (_file({**GOOD, "slack": 0.1}), "unknown field slack"),
])
def test_every_bad_shape_is_ignored_with_a_clear_reason(calibration, content, problem):
    path = calibration(content)
    o = overhead_for(get_gpu("h100"))
    assert not o.calibrated
    assert (o.context_bytes, o.workspace_bytes, o.working_set) == (
        DEFAULT_OVERHEAD.context_bytes, DEFAULT_OVERHEAD.workspace_bytes, DEFAULT_OVERHEAD.working_set)
    assert len(o.problems) == 1 and problem in o.problems[0] and str(path) in o.problems[0]
    assert "ignored" in o.source and "ignored" in o.problems[0]
    b = estimate(TrainingSpec(model="llama-60m", gpu="h100"))          # never a crash, never negative
    assert b.peak_bytes > b.peak_bytes - b.components.overhead > 0
    assert o.problems[0] in b.assumptions and b.to_record()["overhead_calibrated"] is False


def test_an_unreadable_file_is_reported(calibration, tmp_path, monkeypatch):
    path = calibration("{}")
    path.write_bytes(b"\xff\xfe{")                                     # not UTF-8
    assert "not valid JSON" in overhead_for(get_gpu("h100")).problems[0]
    folder = tmp_path / "a-folder.json"
    folder.mkdir()
    monkeypatch.setenv("MEMFIT_CALIBRATION", str(folder))
    assert "it is not a file" in overhead_for(get_gpu("h100")).problems[0]
    monkeypatch.setenv("MEMFIT_CALIBRATION", str(tmp_path / "missing.json"))
    assert overhead_for(get_gpu("h100")) == DEFAULT_OVERHEAD           # no file: nothing calibrated


def test_a_huge_file_is_not_read(calibration):
    calibration({"version": 1, "gpus": {f"gpu-{i}": GOOD for i in range(20000)}})
    assert "larger than 1 MiB" in overhead_for(get_gpu("h100")).problems[0]


def test_an_old_allocator_slack_is_read_and_ignored(calibration):
    calibration(_file({"context_bytes": 600 * MIB, "allocator_slack": 0.07}))
    o = overhead_for(get_gpu("h100"))
    assert o.calibrated and o.context_bytes == 600 * MIB
    assert "allocator_slack ignored" in o.problems[0]


def test_validate_entry_returns_only_calibration_fields():
    assert validate_entry({**GOOD, "allocator_slack": 0.1}) == GOOD


def test_the_cli_shows_why_a_calibration_was_ignored(calibration, capsys):
    calibration(_file({**GOOD, "context_bytes": -1}))
    assert main(["estimate", "--model", "llama-60m", "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    assert "ignored: field context_bytes must be" in out and "overhead: default constants" in out
