"""Imports point one way and stay cheap (STYLE.md principle 9)."""
import subprocess
import sys

import pytest

CHECKS = {
    # module imported -> modules that must not be loaded afterwards
    "planner, planner.cli, planner.estimate, planner.comparison, planner.methods, planner.sharding": ["torch", "streamlit", "transformers", "pandas"],
    "lowrank": ["planner", "profiler", "streamlit"],
    "profiler": ["streamlit"],
    # the parent of a sharded burst only launches torchrun and reads files
    "profiler.distributed.burst, profiler.distributed.launch, profiler.distributed.compare": ["torch", "streamlit"],
}


@pytest.mark.parametrize("modules, forbidden", CHECKS.items())
def test_import_boundaries(modules, forbidden):
    code = (f"import sys, importlib\nfor m in '{modules}'.split(', '):\n"
            f"    try:\n        importlib.import_module(m)\n    except ModuleNotFoundError as e:\n"
            f"        if e.name != m: raise\n"
            f"bad = [f for f in {forbidden!r} if f in sys.modules]\nprint(bad)\nassert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_functions_survive_importing_their_submodules():
    """`planner.compare`, `profiler.trace` and `profiler.validate` are functions; importing any
    submodule anywhere (as the app and the CLI do, in any order) must not rebind them to a module
    (issue 9: the Validate page's second trace raised "'module' object is not callable")."""
    code = ("import importlib, planner, profiler\n"
            "for m in ['planner.ask', 'planner.fit', 'planner.comparison', 'planner.cli', 'profiler.cli',\n"
            "          'profiler.tracing', 'profiler.validation', 'profiler.compare', 'profiler.burst']:\n"
            "    importlib.import_module(m)\n"
            "import types\n"
            "for f in (planner.compare, profiler.trace, profiler.validate, profiler.compare, planner.estimate):\n"
            "    assert callable(f) and not isinstance(f, types.ModuleType), f\n"
            "from planner import compare\n"
            "assert len(compare('llama-60m', methods=['adamw'])) == 1\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: the one planner module that may run the profiler: the traced-activations adapter
PROFILER_ADAPTER = "planner/traced.py"


def test_only_the_traced_adapter_imports_the_profiler():
    """The planner stays importable without torch: no planner module but `planner/traced.py`
    imports the profiler (statically), and importing every other planner module loads neither
    `profiler` nor `planner.traced`."""
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    importers = set()
    for path in sorted((root / "planner").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            if any(n == "profiler" or n.startswith("profiler.") for n in names):
                importers.add(str(path.relative_to(root)))
    assert importers == {PROFILER_ADAPTER}, importers
    modules = sorted(f"planner.{p.relative_to(root / 'planner').with_suffix('').as_posix().replace('/', '.')}"
                     for p in (root / "planner").rglob("*.py")
                     if p.name != "__main__.py" and str(p.relative_to(root)) != PROFILER_ADAPTER)
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m.removesuffix('.__init__'))\n"
            "bad = [m for m in ('profiler', 'planner.traced', 'torch') if m in sys.modules]\n"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
