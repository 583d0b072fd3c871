"""Imports point one way and stay cheap (STYLE.md principle 9)."""
import subprocess
import sys

import pytest

CHECKS = {
    # module imported -> modules that must not be loaded afterwards
    "planner, planner.cli, planner.estimate, planner.compare, planner.methods": ["torch", "streamlit", "transformers", "pandas"],
    "lowrank": ["planner", "profiler", "streamlit"],
    "profiler": ["streamlit"],
}


@pytest.mark.parametrize("modules, forbidden", CHECKS.items())
def test_import_boundaries(modules, forbidden):
    code = (f"import sys, importlib\nfor m in '{modules}'.split(', '):\n"
            f"    try:\n        importlib.import_module(m)\n    except ModuleNotFoundError as e:\n"
            f"        if e.name != m: raise\n"
            f"bad = [f for f in {forbidden!r} if f in sys.modules]\nprint(bad)\nassert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
