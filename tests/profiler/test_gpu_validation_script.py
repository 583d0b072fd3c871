"""bench/gpu_validation.py on a CPU: its tables, its markers, and a dry run of one tiny burst.

No GPU here: the device-memory cells of a CPU dry run have no measured side (a CPU burst has no
caching allocator), and the GPU section of docs/validation.md is never written from one."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_validation", ROOT / "bench" / "gpu_validation.py")
gv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gv)

MIB = 1 << 20


def _row(component, predicted, measured, conf="native", model="llama-60m", method="adamw"):
    error = None if measured is None else (predicted - measured) / measured
    return {"model": model, "method": method, "alloc_conf": conf, "component": component,
            "predicted_bytes": predicted, "measured_bytes": measured, "relative_error": error}


def test_alloc_confs_are_semicolon_separated():
    assert gv.parse_alloc_confs("native; expandable_segments:True,max_split_size_mb:512") == \
        [None, "expandable_segments:True,max_split_size_mb:512"]
    with pytest.raises(SystemExit):
        gv.parse_alloc_confs(" ; ")


def test_markdown_has_the_component_and_the_device_memory_tables():
    rows = [_row("weights", 100 * MIB, 100 * MIB), _row("peak", 300 * MIB, 310 * MIB),
            _row("allocated", 330 * MIB, 320 * MIB), _row("reserved", 400 * MIB, 380 * MIB),
            _row("device_peak", 1500 * MIB, 1400 * MIB), _row("required", 350 * MIB, None),
            _row("reserved", 340 * MIB, 330 * MIB, conf="expandable_segments:True"),
            {"model": "llama-60m", "method": "q-galore", "alloc_conf": "native", "component": None,
             "message": "oom: out of memory at step 1"}]
    text = gv.markdown(rows, "cuda:0", "NVIDIA H100 80GB HBM3", "default constants")
    lines = text.splitlines()
    assert lines[0].startswith("### NVIDIA H100 80GB HBM3")
    assert "| llama-60m | adamw | 100.00 MiB / 100.00 MiB (+0.0 %) |" in text
    device = [line for line in lines if line.startswith("| llama-60m | adamw | native |")][0]
    assert "330.00 MiB / 320.00 MiB (+3.1 %)" in device and "400.00 MiB / 380.00 MiB (+5.3 %)" in device
    assert device.rstrip(" |").endswith("350.00 MiB")                    # required: predicted only
    assert "| llama-60m | adamw | expandable_segments:True | - | 340.00 MiB / 330.00 MiB (+3.0 %) |" in text
    assert "oom: out of memory at step 1" in text


def test_write_section_replaces_only_between_the_markers(tmp_path):
    doc = tmp_path / "validation.md"
    doc.write_text(f"before\n{gv.START}\nold\n{gv.END}\nafter\n")
    gv.write_section(doc, "new table")
    assert doc.read_text() == f"before\n{gv.START}\nnew table\n{gv.END}\nafter\n"
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(SystemExit):
        gv.write_section(tmp_path / "plain.md", "x")


def test_cpu_dry_run_of_one_tiny_burst(tiny_config, capsys, tmp_path):
    doc = tmp_path / "validation.md"
    doc.write_text(f"{gv.START}\n{gv.END}\n")
    assert gv.main(["--device", "cpu", "--models", tiny_config, "--methods", "adamw", "--batch", "2",
                    "--seq", "32", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "CPU dry run (not a GPU result)" in out
    assert "| tiny-llama" in out or "tiny_llama" in out
    with pytest.raises(SystemExit, match="refusing"):
        gv.main(["--device", "cpu", "--models", tiny_config, "--methods", "adamw", "--batch", "2",
                 "--seq", "32", "--steps", "1", "--write", str(doc)])
