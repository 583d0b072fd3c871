"""The set-up a user gets from a fresh clone: the Streamlit config the app starts with, the
supported Pythons, and what the README's test command needs."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_usage_statistics_are_off_in_the_projects_streamlit_config():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False
    # the grid's own CSV export does not neutralise formulas: only the app's downloads remain
    assert config["client"]["disableDataExport"] is True


def test_streamlit_started_from_the_repo_root_reads_that_config(tmp_path):
    """`streamlit config show` loads configuration as `streamlit run app.py` does (the user's
    ~/.streamlit, then ./.streamlit in the working folder); an empty HOME keeps a developer's own
    config out of it."""
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("STREAMLIT_BROWSER_GATHER_USAGE_STATS", None)
    shown = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert "\ngatherUsageStats = false\n" in shown
    assert "\nmaxUploadSize = 5\n" in shown and "\ndisableDataExport = true\n" in shown
    elsewhere = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=True).stdout
    assert "\n# gatherUsageStats = true\n" in elsewhere     # the default (shown commented out): the file decides


def test_python_versions_match_the_readme():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.14"
    assert "torch==2.13.0" in project["dependencies"]
    readme = (ROOT / "README.md").read_text()
    assert "Python 3.11, 3.12 or 3.13" in readme


def test_browser_tests_without_chromium_fail_saying_how_to_install_it(tmp_path):
    """Not a skip (CI would pass without opening the app) and not Playwright's own error."""
    env = {**os.environ, "MEMFIT_CHROMIUM": str(tmp_path / "no-chromium")}
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/browser", "-x", "-q", "-p", "no:cacheprovider",
                          "-k", "every_page_renders and Methods"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0
    assert "apt-get install -y chromium" in run.stdout and "no-chromium" in run.stdout
    assert "Executable doesn't exist" not in run.stdout          # Playwright's message
