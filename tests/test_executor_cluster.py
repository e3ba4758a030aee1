"""`--ray-address HOST:PORT` against a Ray head started with `ray start --head`, as on a real cluster.
(Its own module: `ray stop` ends every Ray on the machine, so it runs after test_executor.py's.)"""

import shutil
import subprocess
import sys

import pytest

from gradaudit.store import Store

pytest.importorskip("ray")
PORT = 6391


@pytest.mark.slow
def test_audit_on_a_running_ray_cluster(tmp_path):
    ray = shutil.which("ray") or str(__import__("pathlib").Path(sys.executable).with_name("ray"))
    started = subprocess.run([ray, "start", "--head", "--port", str(PORT), "--num-cpus", "2",
                              "--include-dashboard=false", "--disable-usage-stats"], capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        out = tmp_path / "run"
        result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", "--seeds-per-model",
                                 "1", "--methods", "saliency,random", "--fractions", "0.1", "--repeats", "1",
                                 "--executor", "ray", "--ray-address", f"127.0.0.1:{PORT}", "--out", str(out)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ray: 2 workers at 127.0.0.1:" in result.stdout
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
    saved = Store(out / "results.sqlite")
    try:
        assert len(saved.rows("diffroar")) == 2 * 1 * 1 * 2             # methods x levels x repeats x models
        described = [r["description"] for r in saved.rows("inputs") if r["what"].startswith("executor")]
    finally:
        saved.close()
    assert described == [f"ray, 2 workers at 127.0.0.1:{PORT}"]
