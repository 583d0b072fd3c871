"""`python -m planner` when its output cannot be written: one line on stderr and exit 2, or a
quiet exit 141 (128 + SIGPIPE, what a Unix tool killed by SIGPIPE reports) for a closed pipe.
Never a traceback. Each case runs the real command in a subprocess."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _planner(*argv: str, closed_stdout: bool = False) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "planner", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if closed_stdout:
        proc.stdout.close()             # the reader is gone before anything is written (`| head`)
        err = proc.stderr.read()
    else:
        _, err = proc.communicate()
    return proc.wait(), err


@pytest.mark.parametrize("output, message", [
    ("{tmp}/missing/dir/out.csv", "the folder '{tmp}/missing/dir' does not exist"),
    ("{tmp}", "--output '{tmp}' is a directory: name a file in it"),
    ("/proc/version", "cannot write --output '/proc/version'"),
])
def test_output_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, output, message):
    code, err = _planner("compare", "--model", "llama-60m", "--format", "csv", "--output", output.format(tmp=tmp_path))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path) in err


@pytest.mark.parametrize("argv", [["models"], ["compare", "--model", "llama-7b", "--all-precisions", "--format", "csv"]])
def test_a_closed_pipe_ends_quietly(argv):
    code, err = _planner(*argv, closed_stdout=True)
    assert (code, err) == (141, "")
