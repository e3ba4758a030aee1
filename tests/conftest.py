"""Test-run plumbing: the tests' own modules on the path, one torch thread per xdist worker, figures closed after
each test, and a check at the end of the run that no test wrote into the working tree (each writes under its
``tmp_path``)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each, so they do not oversubscribe the cores; the
    # commands a test starts get one thread too, as a run resumed in a child must give the parent's numbers
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
_BEFORE = pytest.StashKey[object]()
_FOUND = pytest.StashKey[str]()


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures a test draws (``result.plot()`` returns one) are closed after it, so none pile up."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def _tree() -> set[str] | str:
    """The paths ``git status`` lists under the project (new files, changed and deleted tracked files; ignored
    files such as .venv and caches left out), or why they cannot be listed (not a git checkout, no git)."""
    command = ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=all", "--", "."]
    try:
        found = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"git status could not run ({err})"
    if found.returncode != 0:
        return f"git status failed: {(found.stderr.strip().splitlines() or ['no message'])[0]}"
    return {line[3:] for line in found.stdout.splitlines()}


def pytest_sessionstart(session):
    session.config.stash[_BEFORE] = _tree()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when the working tree holds paths it did not hold before it: a test wrote outside its
    ``tmp_path`` (a command run without --out, a file written to the current folder)."""
    before = session.config.stash.get(_BEFORE, "the run started before this conftest was loaded")
    after = _tree()
    if isinstance(before, str) or isinstance(after, str):
        session.config.stash[_FOUND] = f"working-tree check skipped: {before if isinstance(before, str) else after}"
        return
    new = sorted(after - before)
    if new:
        session.config.stash[_FOUND] = ("the tests left new paths in the working tree (write under tmp_path, or "
                                        "chdir there for commands that write to their defaults):\n  "
                                        + "\n  ".join(new))
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    found = config.stash.get(_FOUND, None)
    if found:
        terminalreporter.write_line(found, red=found.startswith("the tests"), yellow=found.startswith("working"))
