"""``gradaudit influence``: the tiny preset end to end (factors, scores, proponents and opponents with their
images, LDS and mislabel detection, the report), resume after kill -9 with the factors reused, the report's
escaping, and every bad argument as one ``gradaudit: error:`` line with exit code 2."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import kill_once_rows_appear, stored_rows

from gradaudit import cli
from gradaudit.report import write_report
from gradaudit.store import Store

TINY = ["influence", "--preset", "tiny", "--lds", "6", "--mislabel", "0.1"]


@pytest.mark.slow
def test_tiny_run_reports_queries_with_proponents_and_resumes_after_kill_9(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gradaudit", *TINY, "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = out / "results.sqlite"
    before = kill_once_rows_appear(first, store, audit="lds_retraining")
    assert 0 < len(before) < 6
    assert (out / "factors" / "settings.json").is_file() and (out / "scores.pt").is_file()
    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "factors read from" in second.stdout                  # not fitted again
    after = stored_rows(store, "lds_retraining")
    assert after[:len(before)] == before and len(after) == len({k for k, _ in after}) == 6
    assert {row["method"] for row in _rows(store, "lds")} == {"ekfac", "identity", "random"}
    assert {row["method"] for row in _rows(store, "mislabel_detection")} == {"ekfac", "identity", "random"}
    tops = _rows(store, "influence_top")
    assert len(tops) == 4 and all(len(r["proponents"]) == len(r["opponents"]) == 3 for r in tops)
    assert all(r["proponents"][0]["score"] >= r["opponents"][0]["score"] for r in tops)
    page = (out / "report.html").read_text()
    assert "Which training examples made each prediction (ekfac influence)" in page
    assert "query 0: label" in page and "proponents:" in page and "opponents:" in page
    assert "removing it would raise the loss by about score / N (N = 200" in page
    assert "Linear datamodeling score" in page and "Mislabel detection" in page
    assert "ekfac beats random on the LDS" in page or "ekfac is not distinguishable from random on the LDS" in page
    assert "<script" not in page


@pytest.mark.slow
def test_trak_ensemble_with_lds_seeds_and_brittleness_resumes_members_after_kill_9(tmp_path):
    """``--strategy trak --ensemble 3``: members 1 and 2 trained as units and saved one by one; a run killed
    once the first is saved keeps it (not retrained: same bytes); the rerun finishes the LDS (2 models per
    subset), brittleness and the report, with queries drawn across classes."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gradaudit", "influence", "--preset", "tiny", "--strategy", "trak", "--projection",
            "64", "--ensemble", "3", "--lds", "3", "--lds-seeds", "2", "--brittleness", "--brittleness-ks", "5",
            "--recipe", "optimizer=adam,lr=0.01,epochs=4,batch_size=32", "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    member = out / "models" / "member-1.pt"
    deadline = time.time() + 300
    while not member.is_file() and time.time() < deadline and first.poll() is None:
        time.sleep(0.01)
    assert first.poll() is None, first.stdout.read()
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    first.stdout.close()
    kept = {p.name: p.read_bytes() for p in (out / "models").glob("member-*.pt")}
    assert "member-1.pt" in kept
    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {p.name: p.read_bytes() for p in (out / "models").glob("member-*.pt") if p.name in kept} == kept
    assert ("ensemble: training 1 more models" in second.stdout) == (len(kept) == 1)
    assert sorted(p.name for p in (out / "models").glob("member-*.pt")) == ["member-1.pt", "member-2.pt"]
    store = out / "results.sqlite"
    assert {row["method"] for row in _rows(store, "lds")} == {"trak", "identity", "random"}
    assert all(row["lds_seeds"] == 2 for row in _rows(store, "lds"))
    britt = {row["method"]: row for row in _rows(store, "brittleness")}
    assert set(britt) == {"trak", "identity", "random"}
    assert all(k in (5.0, 10.0) for row in britt.values() for k in row["smallest_k_each"])   # 10: not flipped
    labels = {row["label"] for row in _rows(store, "influence_top")}
    assert len(labels) == 4                                       # 4 queries, 4 classes
    page = (out / "report.html").read_text()
    assert "(trak influence)" in page and "Brittleness" in page and "an ensemble of 3 models" in page
    assert "No finished audits in this run yet." not in page
    assert "trak" in second.stdout and "minus identity (paired over queries)" in second.stdout


def test_queries_are_drawn_across_classes_seeded():
    import torch

    from gradaudit.jobs.influence import across_classes

    y = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    chosen = across_classes(y, 9, seed=0)
    assert len(set(chosen.tolist())) == 9 and chosen.tolist() == sorted(chosen.tolist())
    assert torch.bincount(y[chosen], minlength=3).tolist() == [3, 3, 3]
    assert torch.bincount(y[across_classes(y, 12, seed=0)], minlength=3).tolist() == [5, 3, 4]  # class 1 ran out
    assert across_classes(y, 9, seed=0).tolist() == chosen.tolist()
    assert across_classes(y, 9, seed=1).tolist() != chosen.tolist()


def _rows(path, audit):
    store = Store(path)
    try:
        return store.rows(audit)
    finally:
        store.close()


def test_the_report_escapes_what_the_store_holds(tmp_path):
    example = {"index": 1, "label": 0, "label_name": "<b>zero</b>", "score": 0.5, "image": "iVBOR\"><script>"}
    store = Store(tmp_path / "results.sqlite")
    store.put("influence_top", {"model": "cnn", "query": 0},
              {"label": 0, "label_name": "<script>alert(1)</script>", "predicted": 0, "predicted_name": "0",
               "loss": 0.1, "image": "abc", "strategy": "ekfac", "train_examples": 10,
               "proponents": [example], "opponents": [example]})
    store.close()
    page = write_report(tmp_path).read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;zero&lt;/b&gt;" in page and "+0.5" in page


@pytest.mark.parametrize(("extra", "message"), [
    (["--strategy", "magic"], "--strategy must be one of identity, diagonal, kfac, ekfac, exact, trak; got 'magic'"),
    (["--ensemble", "0"], "--ensemble must be"),
    (["--lds-seeds", "0"], "--lds-seeds must be"),
    (["--brittleness-ks", "0,5"], "--brittleness-ks must be removal counts"),
    (["--strategy", "trak", "--fisher", "empirical"], "--fisher does not apply to --strategy trak"),
    (["--strategy", "ekfac", "--projection", "0"], "--projection applies to --strategy trak only"),
    (["--lds", "2"], "--lds must be 0 (no LDS) or a number of subsets >= 3; got 2"),
    (["--mislabel", "1.5"], "--mislabel must be a share in [0, 1); got 1.5"),
    (["--queries", "0"], "--queries must be"),
    (["--model", "nomodule"], "--model must look like package.module:factory@weights.pt; got 'nomodule'"),
    (["--model", "usernets:grey_cnn@missing.pt"], "missing.pt does not exist"),
    (["--strategy", "identity", "--damping", "0.1"], "--damping does not apply to --strategy identity"),
    (["--preset", "huge"], "--preset must be one of quick, tiny; got 'huge'"),
    (["--queries", "100000"], "--queries 100000 is more than the"),
    (["--data", "nowhere:x"], "unknown scheme 'nowhere'"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    assert cli.main(["influence", "--preset", "tiny", "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradaudit: error: ") and err.count("\n") == 1 and message in err, err


def test_a_rerun_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["influence", "--preset", "tiny", "--out", str(out)]) == 0
    assert (out / "factors" / "settings.json").is_file()
    capsys.readouterr()
    assert cli.main(["influence", "--preset", "tiny", "--out", str(out), "--queries", "5"]) == 2
    err = capsys.readouterr().err
    assert err == (f"gradaudit: error: --out {out} holds results made with other settings (queries: 4 -> 5); rerun "
                   "with the same settings to resume, or use a new --out\n")


def test_a_users_model_is_attributed_and_misfits_are_refused(tmp_path, capsys):
    import torch

    from gradaudit import models

    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(models.small_cnn(width=4).state_dict(), weights)
    out = tmp_path / "run"
    assert cli.main(["influence", "--preset", "tiny", "--out", str(out), "--model",
                     f"gradaudit.models:small_cnn@{weights}", "--queries", "2"]) == 2    # width 16 by default
    assert "do not fit the model built by gradaudit.models:small_cnn" in capsys.readouterr().err
    torch.save(models.small_cnn().state_dict(), weights)
    assert cli.main(["influence", "--preset", "tiny", "--out", str(out), "--model",
                     f"gradaudit.models:small_cnn@{weights}", "--queries", "2", "--strategy", "kfac"]) == 0
    tops = _rows(out / "results.sqlite", "influence_top")
    assert [r["model"] for r in tops] == ["model", "model"] and tops[0]["strategy"] == "kfac"
    assert not (out / "models").exists()                             # nothing trained here
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
                                   torch.nn.Flatten(), torch.nn.Linear(4 * 7 * 7, 3)).state_dict(), weights)
    capsys.readouterr()
    assert cli.main(["influence", "--preset", "tiny", "--out", str(tmp_path / "other"), "--model",
                     f"usernets:grey_cnn@{weights}"]) == 2
    assert "model 'model' outputs only 3 classes" in capsys.readouterr().err


def test_the_reading_says_no_finished_audits_only_when_there_are_none():
    from gradaudit.report.reading import reading

    assert reading({}) == ["No finished audits in this run yet."]
    rows = [{"model": "cnn", "method": "trak", "lds_each": [0.5, 0.62, 0.55, 0.6]},
            {"model": "cnn", "method": "identity", "lds_each": [0.1, 0.2, 0.15, 0.12]}]
    lines = reading({"lds": rows, "brittleness": [
        {"model": "cnn", "method": "trak", "smallest_k_each": [10.0, 20.0, 10.0, 10.0]},
        {"model": "cnn", "method": "identity", "smallest_k_each": [40.0, 80.0, 40.0, 80.0]}]})
    assert lines[0].startswith("cnn: trak beats identity on the LDS (difference +0.")
    assert lines[1].startswith("cnn: trak beats identity on the brittleness")          # fewer removals: better
    assert not any("No finished audits" in line for line in lines)
