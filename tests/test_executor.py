"""Sweeps on Ray (`--executor ray`): the same rows as the local executor, a killed worker retried, a unit
lost to the system submitted again a bounded number of times (its lost shared inputs put again), a
failing unit named with its exception's type while the others are kept, the driver's authentication
mode the user's or the cluster's, an unreachable address refused fast, and a driver killed mid-sweep
resumed from the store. A real local Ray runs here (2 CPUs); tests/test_executor_nodeloss.py loses nodes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import torch
from helpers import kill_once_rows_appear, stored_rows

from gradaudit import cli, data, methods, models
from gradaudit.audit import diffroar
from gradaudit.jobs.executor import RayExecutor, cluster_auth_mode, describe, lost_to_the_system, make_executor
from gradaudit.store import Store
from gradaudit.units import LocalExecutor, Unit, UnitsFailed

# Ray tests run one at a time, on one xdist worker: two local clusters on 2 cores starve each other
pytestmark = pytest.mark.xdist_group("ray")

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module; workers can import this test folder's modules."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield RayExecutor()
    ray.shutdown()


def _twice(x):
    return 2 * x


def _die_once(marker):
    """Kill this worker process on the first attempt (SIGKILL: no cleanup); succeed on the retry."""
    marker = Path(marker)
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return attempts


def _fail(_):
    raise ValueError("this cell cannot be computed")


def _node_dies(marker, times):
    """Fail as a lost node would, ``times`` times (counted in ``marker``), then succeed."""
    marker = Path(marker)
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts <= times:
        raise ray.exceptions.NodeDiedError(f"fake node loss {attempts}\nnode id ...")
    return attempts


def test_units_run_on_ray_and_results_come_back_to_the_driver(local_ray):
    got = {}
    local_ray.run([Unit(f"u{i}", _twice, (local_ray.share(torch.full((3,), float(i))),)) for i in range(4)],
                  lambda unit, result: got.__setitem__(unit.name, result))
    assert {name: value.tolist() for name, value in got.items()} == {f"u{i}": [2.0 * i] * 3 for i in range(4)}
    assert local_ray.workers == 2
    data = torch.arange(5.0)
    assert local_ray.share((data, "a"), pins=(data,)) == local_ray.share((data, "b"), pins=(data,))  # put once
    assert local_ray.share(data) != local_ray.share(data)


def test_a_worker_killed_mid_task_is_retried(local_ray, tmp_path):
    got = []
    local_ray.run([Unit("dies once", _die_once, (str(tmp_path / "attempts"),))], lambda u, r: got.append(r))
    assert got == [2]                                         # the second attempt, on a fresh worker


def test_a_unit_that_fails_for_good_is_named_and_the_others_are_kept(local_ray):
    got = []
    with pytest.raises(UnitsFailed, match=r"1 of 3 units failed for good .*: bad cell: ValueError: this cell cannot be "
                                          r"computed$"):
        local_ray.run([Unit("good 1", _twice, (1,)), Unit("bad cell", _fail, (0,)), Unit("good 2", _twice, (2,))],
                      lambda u, r: got.append((u.name, r)))
    assert sorted(got) == [("good 1", 2), ("good 2", 4)]


def test_system_failures_are_told_from_the_units_own_and_described_by_type_and_first_line():
    lost = ray.exceptions.OwnerDiedError("ab" * 14, None, "share")
    system = [ray.exceptions.NodeDiedError("node died"), ray.exceptions.WorkerCrashedError(), lost,
              ray.exceptions.ObjectLostError("ab" * 14, None, "share"),
              ray.exceptions.ObjectFetchTimedOutError("ab" * 14, None, "share"),
              ray.exceptions.RayTaskError("_run_with_threads", "traceback", lost)]
    assert all(lost_to_the_system(err) for err in system)
    own = ray.exceptions.RayTaskError("_run_with_threads", "traceback", ValueError("bad cell\nsecond line"))
    assert not lost_to_the_system(own) and not lost_to_the_system(ValueError("x"))
    assert describe(own) == "ValueError: bad cell"
    assert describe(system[-1]) == f"OwnerDiedError: Failed to retrieve object {'ab' * 14}. The ObjectRef was " \
                                   "created at: share"
    assert describe(ray.exceptions.WorkerCrashedError()).startswith("WorkerCrashedError: The worker died unexpectedly")


def test_a_unit_lost_to_the_system_goes_again_up_to_the_bound(local_ray, tmp_path, capsys):
    got = []
    with pytest.raises(UnitsFailed, match=r"^1 of 2 units failed for good .*: always lost: NodeDiedError: fake node "
                                          r"loss 4 \(after 3 resubmissions\)$"):
        local_ray.run([Unit("lost twice", _node_dies, (str(tmp_path / "twice"), 2)),
                       Unit("always lost", _node_dies, (str(tmp_path / "always"), 99))],
                      lambda unit, result: got.append((unit.name, result)))
    assert got == [("lost twice", 3)]
    said = capsys.readouterr().out
    assert said.count("ray: lost twice lost to the system (NodeDiedError: fake node loss") == 2
    assert said.count("ray: always lost lost to the system") == 3 and "(3 of 3)" in said


def test_a_lost_shared_input_is_put_again_once_for_every_unit(local_ray):
    data = torch.arange(3.0)
    pinned, loose = local_ray.share((data,), pins=(data,)), local_ray.share(torch.ones(2))
    unit = Unit("u", _twice, (pinned, loose, 5))
    again = local_ray._put_again(unit, ray.exceptions.ObjectLostError(pinned.hex(), None, "share"))
    assert again.args[0] != pinned and again.args[1:] == (loose, 5) and torch.equal(ray.get(again.args[0])[0], data)
    assert local_ray.share((data,), pins=(data,)) == again.args[0]              # later shares get the new copy
    other = local_ray._put_again(Unit("v", _twice, (pinned,)), ray.exceptions.RayTaskError(
        "_run_with_threads", "traceback", ray.exceptions.OwnerDiedError(pinned.hex(), None, "share")))
    assert other.args == again.args[:1]                                         # put once, not once per unit
    assert local_ray._put_again(unit, ray.exceptions.NodeDiedError("node died")).args == again.args
    local_ray.run([], lambda unit, result: None)


def test_a_drivers_authentication_mode_other_than_disabled_or_token_is_refused_before_asking(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "sometimes")
    with pytest.raises(ValueError, match="RAY_AUTH_MODE must be one of disabled, token; got 'sometimes'"):
        cluster_auth_mode("127.0.0.1:9")


def _small_diffroar(executor, store=None):
    train, test = data.blockmnist("train", digits=(0, 1), copies=1), data.blockmnist("test", digits=(0, 1), copies=1)
    train.x, train.y, test.x, test.y = train.x[:300], train.y[:300], test.x[:100], test.y[:100]
    torch.manual_seed(0)
    net = models.small_cnn(in_shape=(1, 56, 28), classes=2, width=4).eval()

    def mlp():
        return models.mlp(in_shape=(1, 56, 28), classes=2, hidden=16)

    return diffroar([methods.Saliency(), methods.Random(seed=0)], net, train, test, model_fn=mlp, fractions=(0.1, 0.3),
                    repeats=2, epochs=1, fill=0.0, executor=executor, store=store, progress=False).rows


def test_ray_gives_the_local_executors_numbers(local_ray):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                          # a Ray task runs with cpus_per_task = 1 thread: same floats
    try:
        local = _small_diffroar(LocalExecutor())
    finally:
        torch.set_num_threads(threads)
    on_ray = _small_diffroar(local_ray)
    assert len(local) == len(on_ray) == 8
    assert on_ray == local


def test_unreachable_address_is_refused_within_seconds_and_nothing_is_written(tmp_path, capsys):
    start = time.perf_counter()
    code = cli.main(["audit", "--preset", "tiny", "--executor", "ray", "--ray-address", "127.0.0.1:9",
                     "--out", str(tmp_path / "run")])
    assert code == 2 and time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert err.startswith("gradaudit: error: --ray-address 127.0.0.1:9: nothing answers there") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_clear_errors_without_ray_or_with_bad_settings(monkeypatch, capsys, tmp_path):
    with pytest.raises(ValueError, match="--executor must be one of local, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        make_executor("local", "auto")
    with pytest.raises(ValueError, match="--ray-address must be auto or HOST:PORT"):
        make_executor("ray", "nowhere")
    with pytest.raises(ValueError, match="--cpus-per-task must be > 0"):
        make_executor("ray", None, 0)
    monkeypatch.setitem(sys.modules, "ray", None)
    assert cli.main(["audit", "--preset", "tiny", "--executor", "ray", "--out", str(tmp_path / "r")]) == 2
    assert "--executor ray needs Ray: pip install 'gradaudit[dist]'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_local_run_resumed_on_ray_recomputes_nothing(tmp_path, local_ray, monkeypatch):
    out = tmp_path / "run"
    args = ["audit", "--preset", "tiny", "--seeds-per-model", "1", "--methods", "saliency,random", "--fractions",
            "0.1", "--repeats", "1", "--out", str(out)]
    assert cli.main(args) == 0
    before = stored_rows(out / "results.sqlite")

    def no_units(self, units, on_result):
        assert not units, f"a resumed run submitted {[u.name for u in units]}"

    monkeypatch.setattr(RayExecutor, "run", no_units)
    assert cli.main([*args, "--executor", "ray", "--cpus-per-task", "1"]) == 0
    assert stored_rows(out / "results.sqlite") == before


@pytest.mark.slow
def test_driver_killed_mid_sweep_resumes_without_repeating_cells(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", "--seeds-per-model", "1", "--executor",
            "ray", "--methods", "saliency,random", "--fractions", "0.05,0.1,0.2,0.3", "--repeats", "2",
            "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    before = kill_once_rows_appear(first, out / "results.sqlite")
    cells = 2 * 4 * 2 * 2                                        # methods x fractions x repeats x models
    assert 0 < len(before) < cells
    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    after = stored_rows(out / "results.sqlite")
    assert after[:len(before)] == before and len(after) == len(set(after)) == cells
    saved = Store(out / "results.sqlite")
    try:
        executors = [r["description"] for r in saved.rows("inputs") if r["what"].startswith("executor")]
    finally:
        saved.close()
    assert executors and all(e.startswith("ray, 2 workers at local") for e in executors)
    assert "ray, 2 workers at local" in (out / "report.html").read_text()


def _image_folder(folder, count=5):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_explain_a_folder_in_resumable_shards(tmp_path, executor, local_ray):
    from usernets import grey_cnn

    import gradaudit as ga
    from gradaudit.loading import load_image

    torch.manual_seed(0)
    model = grey_cnn().eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    images = _image_folder(tmp_path / "images")
    out = tmp_path / "maps"
    args = ["explain", "--model", "usernets:grey_cnn", "--weights", str(tmp_path / "w.pt"), "--input-dir",
            str(images), "--out-dir", str(out), "--method", "saliency,ig", "--shard-size", "2",
            "--executor", executor]
    assert cli.main(args) == 0
    shards = sorted(out.glob("maps-*.pt"))
    assert [p.name for p in shards] == ["maps-00000.pt", "maps-00001.pt", "maps-00002.pt"]
    saved = [torch.load(p, weights_only=True) for p in shards]
    assert [f for s in saved for f in s["files"]] == [f"img{i}.png" for i in range(5)]
    x = torch.cat([load_image(images / f"img{i}.png", 1) for i in range(5)])
    expected = ga.heatmap(ga.Saliency()(model, x, model(x).argmax(1)))
    torch.testing.assert_close(torch.cat([s["maps"]["saliency"] for s in saved]), expected)
    assert saved[2]["maps"]["ig"].shape == (1, 28, 28)
    stamp = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    assert cli.main(args) == 0
    assert shards[1].exists() and shards[0].stat().st_mtime_ns == stamp      # only the missing shard is redone
    assert not list(out.glob("*.tmp"))


def test_explain_folder_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    empty = str(tmp_path / "empty")
    for argv, message in ((["--input-dir", empty, "--out-dir", str(tmp_path / "o")], "holds no images"),
                          (["--input-dir", str(tmp_path / "empty")], "--input-dir needs --out-dir"),
                          ([], "give --input (one image or tensor file) or --input-dir")):
        assert cli.main(["explain", "--model", "usernets:grey_cnn", "--method", "saliency", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gradaudit: error: ") and message in err
