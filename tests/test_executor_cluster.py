"""`--ray-address HOST:PORT` against a Ray head started with `ray start --head`, as on a real cluster.

The test starts its own head (``--block``, in its own session and temp folder) and ends exactly that
process group, never `ray stop`, which would end every Ray on the machine, a user's too."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray  # noqa: F401  required, not skipped: Ray is installed by the dist extra

from gradaudit.store import Store

# Ray tests run one at a time, on one xdist worker: two local clusters on 2 cores starve each other
pytestmark = pytest.mark.xdist_group("ray")

PORT = 6391


def _wait_for_port(port: int, head: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert head.poll() is None, f"ray start --head exited with {head.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no Ray head answered on port {port} within {seconds} s")


def _processes_under(folder: str) -> list[str]:
    """Command lines of the processes that name ``folder`` (the head's temp dir): its GCS, raylet, workers."""
    found = subprocess.run(["pgrep", "-af", folder], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def _stop(head: subprocess.Popen, folder: str) -> None:
    """End the head's process group: SIGTERM (ray start --block then stops what it started), SIGKILL after 30 s."""
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _processes_under(folder) and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.mark.slow
def test_audit_on_a_running_ray_cluster(tmp_path):
    ray_cli = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    folder = tempfile.mkdtemp(prefix="ga-ray-", dir="/tmp")       # short: Ray's socket paths must stay < 108 bytes
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--port", str(PORT), "--num-cpus", "2",
                             "--temp-dir", folder, "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(PORT, head)
        out = tmp_path / "run"
        result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", "--seeds-per-model",
                                 "1", "--methods", "saliency,random", "--fractions", "0.1", "--repeats", "1",
                                 "--executor", "ray", "--ray-address", f"127.0.0.1:{PORT}", "--out", str(out)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ray: 2 workers at 127.0.0.1:" in result.stdout
    finally:
        _stop(head, folder)
    assert head.returncode is not None and _processes_under(folder) == []     # the head and all it started are gone
    shutil.rmtree(folder, ignore_errors=True)
    saved = Store(out / "results.sqlite")
    try:
        assert len(saved.rows("diffroar")) == 2 * 1 * 1 * 2             # methods x levels x repeats x models
        described = [r["description"] for r in saved.rows("inputs") if r["what"].startswith("executor")]
    finally:
        saved.close()
    assert described == [f"ray, 2 workers at 127.0.0.1:{PORT}"]
