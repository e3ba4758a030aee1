"""Issue 24: a Ray worker node that dies mid-audit costs a retry, not the run, and the driver authenticates as
its cluster does, whatever token file lies in the user's home.

Each test runs a `ray.cluster_utils.Cluster` (a head without CPUs, two one-CPU workers) in a child process
of its own, with its own RAY_AUTH_MODE and HOME, so no test changes this process's Ray; the child takes
"kill" (end a worker node hard: SIGKILL, no cleanup) and "add" (a replacement node) on stdin, and stops
its cluster when stdin closes. Drivers run as `python -m gradaudit` children too, each with its own HOME."""

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray  # noqa: F401  required, not skipped: the children run Ray (the dist extra)
from helpers import stored_rows

# Ray tests run one at a time, on one xdist worker: two local clusters on 2 cores starve each other
pytestmark = pytest.mark.xdist_group("ray")

TESTS = Path(__file__).parent
TOKEN = "gradaudit-test-token-0123456789abcdef"
AUDIT = ["audit", "--preset", "tiny", "--seeds-per-model", "1", "--methods", "saliency,random,inputxgradient",
         "--fractions", "0.05,0.1,0.2,0.4", "--repeats", "2"]

_CLUSTER = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
print(cluster.address, flush=True)
for line in sys.stdin:
    if line.strip() == "kill":
        cluster.remove_node(workers.pop(0), allow_graceful=False)
    elif line.strip() == "add":
        workers.append(cluster.add_node(num_cpus=1))
    print(line.strip(), "done", flush=True)
cluster.shutdown()
"""


def _home(folder: Path, token: bool) -> Path:
    """A HOME for a child process, with ``~/.ray/auth_token`` (as `ray start --head` of Ray 2.59+ leaves) or not."""
    folder.mkdir()
    if token:
        (folder / ".ray").mkdir()
        (folder / ".ray" / "auth_token").write_text(TOKEN)
    return folder


def _env(home: Path, **settings) -> dict:
    """This process's environment with no Ray authentication settings, ``home`` as HOME, then ``settings``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    return {**env, "HOME": str(home), "PYTHONPATH": os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
            **settings}


@contextmanager
def cluster(home: Path, mode: str):
    """A head and two worker nodes in a child process, authentication ``mode``; yields (address, command):
    ``command("kill")`` ends a worker node hard, ``command("add")`` adds one; both return when done."""
    child = subprocess.Popen([sys.executable, "-c", _CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=_env(home, RAY_AUTH_MODE=mode),
                             start_new_session=True)

    def command(what: str) -> None:
        child.stdin.write(what + "\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == f"{what} done"

    try:
        address = child.stdout.readline().strip()
        assert address, "the cluster did not start"
        yield address, command
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        child.stdout.close()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    """The audit's rows from a local run (one intra-op thread, as every Ray task uses: the same floats)."""
    out = tmp_path_factory.mktemp("local") / "run"
    home = _home(tmp_path_factory.mktemp("home") / "h", token=False)
    done = subprocess.run([sys.executable, "-m", "gradaudit", *AUDIT, "--out", str(out)], capture_output=True,
                          text=True, timeout=300, env=_env(home, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(stored_rows(out / "results.sqlite"))


def _audit_losing_a_node(tmp_path: Path, home: Path, address: str, command) -> tuple[subprocess.CompletedProcess,
                                                                                     float]:
    """The audit on the cluster at ``address`` (its driver on one thread, as the local run: the same maps),
    one worker node ended hard 3 s into the retraining units and a replacement added; returns the finished
    driver and the seconds from the kill to its end."""
    driver = subprocess.Popen([sys.executable, "-m", "gradaudit", *AUDIT, "--executor", "ray", "--ray-address",
                               address, "--out", str(tmp_path / "run")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=_env(home, OMP_NUM_THREADS="1"))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while not any("retraining units on" in line for line in lines):
        assert driver.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.2)
    time.sleep(3)
    assert driver.poll() is None, "the audit ended before a node could be lost"
    killed = time.monotonic()
    command("kill")
    command("add")
    code = driver.wait(timeout=300)
    reader.join()
    driver.stdout.close()
    return subprocess.CompletedProcess(driver.args, code, "".join(lines)), time.monotonic() - killed


@pytest.mark.slow
@pytest.mark.parametrize("token_file", [False, True], ids=["no token file", "token file in HOME"])
def test_a_worker_node_lost_mid_audit_costs_a_retry_not_the_run(tmp_path, local_rows, token_file):
    home = _home(tmp_path / "home", token_file)
    with cluster(home, "disabled") as (address, command):
        driver, seconds = _audit_losing_a_node(tmp_path, home, address, command)
    assert driver.returncode == 0, driver.stdout
    retries = driver.stdout.count("lost to the system")
    print(f"node lost, token file {token_file}: {retries} resubmissions, {seconds:.0f} s from the kill to the end")
    assert 1 <= retries and "failed for good" not in driver.stdout
    assert sorted(stored_rows(tmp_path / "run" / "results.sqlite")) == local_rows


def _twice(x):
    return 2 * x


def _fail(_):
    raise ValueError("this cell cannot be computed\nand a second line")


@pytest.mark.slow
def test_a_unit_whose_code_raises_is_reported_once_by_name_and_type(tmp_path, monkeypatch, capsys):
    """Also: a user's RAY_AUTH_MODE=token against a cluster without authentication (the mismatch that turned a
    lost node into OwnerDiedErrors for every unit) is refused up front."""
    from gradaudit.jobs.executor import RayExecutor
    from gradaudit.units import Unit, UnitsFailed

    home = _home(tmp_path / "home", token=True)
    with cluster(home, "disabled") as (address, _):
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("RAY_AUTH_MODE", "token")                 # restored after the test
        with pytest.raises(ValueError, match="RAY_AUTH_MODE=token, but the cluster admits drivers without a token"):
            RayExecutor(address)
        monkeypatch.delenv("RAY_AUTH_MODE")                          # the cluster's mode is learnt
        executor = RayExecutor(address)
        got = []
        try:
            with pytest.raises(UnitsFailed) as failed:
                executor.run([Unit("good 1", _twice, (1,)), Unit("bad cell", _fail, (0,)),
                              Unit("good 2", _twice, (executor.share(2),))], lambda u, r: got.append((u.name, r)))
        finally:
            executor.close()
        assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert str(failed.value) == ("1 of 3 units failed for good (the others are stored; rerun to retry): "
                                 "bad cell: ValueError: this cell cannot be computed")
    assert sorted(got) == [("good 1", 2), ("good 2", 4)]
    assert "lost to the system" not in capsys.readouterr().out               # not submitted again


_DRIVER = """
import sys
from gradaudit.jobs.executor import make_executor
from gradaudit.units import Unit
from test_executor_nodeloss import _twice

executor = make_executor("ray", sys.argv[1])
got = []
executor.run([Unit(f"u{i}", _twice, (executor.share(i),)) for i in range(4)], lambda unit, result: got.append(result))
executor.close()
print(sorted(got))
"""


@pytest.mark.slow
def test_a_cluster_with_token_authentication_is_joined_with_its_token(tmp_path):
    home = _home(tmp_path / "home", token=True)
    stranger = _home(tmp_path / "stranger", token=False)
    with cluster(home, "token") as (address, _):
        refused = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", "--executor", "ray",
                                  "--ray-address", address, "--out", str(tmp_path / "refused")],
                                 capture_output=True, text=True, timeout=120, env=_env(stranger))
        joined = subprocess.run([sys.executable, "-c", _DRIVER, address], capture_output=True, text=True, timeout=120,
                                env=_env(home))
    assert refused.returncode == 2 and not (tmp_path / "refused").exists()
    assert f"--ray-address {address}: the cluster refused this driver without a token (" in refused.stderr, \
        refused.stderr
    assert ") and with one (" in refused.stderr
    assert joined.returncode == 0, joined.stdout + joined.stderr
    said = joined.stdout.splitlines()
    assert said[0].startswith(f"ray: 2 workers at {address} (") and said[1:] == ["[0, 2, 4, 6]"], joined.stdout
