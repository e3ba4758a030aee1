"""The test run fails when a test leaves a new path in the working tree (the check in tests/conftest.py), and
says why it skips the check outside a git checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
WRITER = ("from pathlib import Path\n\n\n"
          "def test_writes():\n    (Path(__file__).parents[1] / 'left.txt').write_text('x')\n")


def _project(folder: Path) -> Path:
    """A project of one test that writes ``left.txt`` beside its tests folder, with this run's conftest."""
    (folder / "tests").mkdir(parents=True)
    shutil.copy(TESTS / "conftest.py", folder / "tests" / "conftest.py")
    shutil.copy(TESTS.parent / ".gitignore", folder / ".gitignore")
    (folder / "tests" / "test_writes.py").write_text(WRITER)
    return folder


def _pytest(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(folder.parent)}     # no git checkout above counts
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("git") is None, reason="the check reads git status; this machine has no git")
def test_a_test_writing_into_the_checkout_fails_the_run_and_names_the_path(tmp_path):
    folder = _project(tmp_path / "checkout")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    first = _pytest(folder)
    assert first.returncode == 1 and "1 passed" in first.stdout, first.stdout + first.stderr
    assert "the tests left new paths in the working tree" in first.stdout and "\n  left.txt" in first.stdout
    again = _pytest(folder)                                  # the path was there before this run: nothing new
    assert again.returncode == 0, again.stdout + again.stderr
    assert "left new paths" not in again.stdout


def test_outside_a_git_checkout_the_check_is_skipped_with_its_reason(tmp_path):
    folder = _project(tmp_path / "plain")
    found = _pytest(folder)
    assert found.returncode == 0, found.stdout + found.stderr
    assert "working-tree check skipped: " in found.stdout
