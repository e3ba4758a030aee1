"""``gradaudit evaluate``: every metric and the metric audit from one command, stored as it goes, resumed,
reported, and every bad argument answered by one error line."""

import sqlite3
import subprocess
import sys
import time

import pytest
import torch

import gradaudit.audit.metrics as metrics
from gradaudit.cli import main
from gradaudit.jobs import evaluate
from gradaudit.jobs.presets import COMMANDS

TINY = ["evaluate", "--preset", "tiny"]


def _rows(run, audit):
    db = sqlite3.connect(run / "results.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM results WHERE audit = ?", (audit,)).fetchone()[0]
    finally:
        db.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "run"
    assert main([*TINY, "--out", str(out)]) == 0
    return out


def test_every_metric_and_the_metric_audit_are_stored_and_reported(run):
    methods = 4                                     # Saliency, GradCAM(auto layer), Random, Sobel
    for audit in ("insertion_deletion", "infidelity", "sensitivity_max", "faithfulness_correlation", "monotonicity",
                  "pointing_game", "relevance_mass", "relevance_rank"):
        assert _rows(run, audit) == methods, audit
    assert _rows(run, "road") == methods                    # one fraction in the tiny preset
    audited = {"insertion", "deletion", "infidelity", "sensitivity_max", "faithfulness_correlation", "monotonicity",
               "hit_rate", "relevance_mass", "relevance_rank", "morf_accuracy", "lerf_accuracy"}
    db = sqlite3.connect(run / "results.sqlite")
    stored = {key for (key,) in db.execute("SELECT key FROM results WHERE audit = 'metric_audit'")}
    db.close()
    assert all(any(f'"{metric}"' in key for key in stored) for metric in audited)
    page = (run / "report.html").read_text()
    assert "The metrics, audited" in page and "Max-sensitivity" in page and "Sobel" in page


def test_a_rerun_resumes_without_recomputing(run, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise AssertionError("a stored metric was recomputed")

    monkeypatch.setattr(metrics, "causal_curves", fail)
    monkeypatch.setattr(metrics, "perturbation_drops", fail)
    monkeypatch.setattr(metrics, "perturbation_dots", fail)
    assert main([*TINY, "--out", str(run)]) == 0
    assert "the metrics, audited" in capsys.readouterr().out


def test_a_rerun_with_other_settings_is_refused(run, capsys):
    assert main([*TINY, "--out", str(run), "--images", "6"]) == 2
    assert "images: 12 -> 6" in capsys.readouterr().err


def test_a_run_killed_midway_resumes_to_the_same_numbers(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "gradaudit", *TINY, "--out", str(out), "--metrics", "insertion,infidelity"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (out / "results.sqlite").exists() and _rows(out, "insertion_deletion") >= 1:
            break
        time.sleep(0.2)
    process.kill()                                            # kill -9 (SIGKILL) after the first stored row
    process.wait()
    assert subprocess.run(command, capture_output=True).returncode == 0
    fresh = tmp_path / "fresh"
    assert subprocess.run(command[:-3] + [str(fresh), "--metrics", "insertion,infidelity"],
                          capture_output=True).returncode == 0
    for audit in ("insertion_deletion", "infidelity"):
        db_a, db_b = sqlite3.connect(out / "results.sqlite"), sqlite3.connect(fresh / "results.sqlite")
        rows_a = sorted(db_a.execute("SELECT key, row FROM results WHERE audit = ?", (audit,)).fetchall())
        rows_b = sorted(db_b.execute("SELECT key, row FROM results WHERE audit = ?", (audit,)).fetchall())
        db_a.close(), db_b.close()
        assert rows_a == rows_b and len(rows_a) == 4


@pytest.mark.parametrize(("arguments", "message"), [
    (["--metrics", "insertion,accuracy"], "--metrics: unknown metric 'accuracy'"),
    (["--images", "100000"], "--images 100000 is more than the"),
    (["--data", "mnist", "--metrics", "pointing"], "--metrics pointing needs a ground-truth mask per image"),
    (["--methods", "saliency,nope"], "--methods: unknown method 'nope'"),
    (["--images", "0"], "--images must be an integer >= 1"),
])
def test_bad_arguments_are_one_error_line(tmp_path, capsys, arguments, message):
    assert main([*TINY, "--out", str(tmp_path / "bad"), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradaudit: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_data_without_masks_runs_every_other_metric(tmp_path):
    settings = COMMANDS["evaluate"].preset("tiny", data="mnist")
    test_set = type("Digits", (), {"x": torch.zeros(2, 1, 4, 4)})()
    assert evaluate.chosen_metrics(settings, test_set) == ("insertion", "deletion", "infidelity", "sensitivity",
                                                           "faithfulness", "monotonicity", "road", "sparseness",
                                                           "complexity", "mprt", "smprt", "emprt", "random_logit",
                                                           "completeness", "input_invariance", "lipschitz", "ris",
                                                           "irof", "aopc")
