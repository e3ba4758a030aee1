"""A run folder answers for its settings: a rerun that would change a stored number is refused before
anything is written, naming each difference; a rerun that changes only where work runs resumes."""

import hashlib
import re
from pathlib import Path

import pytest
import torch
from datafiles import idx_folder

from gradaudit import cli
from gradaudit.store import Store

pytestmark = pytest.mark.slow

AUDIT = ["audit", "--preset", "tiny", "--seeds-per-model", "1", "--methods", "saliency,random", "--fractions", "0.1",
         "--repeats", "1"]
UNLEARN = ["unlearn", "--preset", "tiny", "--seeds", "1", "--scenarios", "class"]


def _fingerprint(folder):
    """sha256 of the store and of every model file in ``folder``."""
    files = [folder / "results.sqlite", *sorted((folder / "models").glob("*"))]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def _results(folder):
    """Every stored row but the per-run bookkeeping (settings and inputs rows are written by each run)."""
    store = Store(folder / "results.sqlite")
    try:
        return {audit: store.rows(audit) for audit in store.audits() if audit not in ("settings", "inputs")}
    finally:
        store.close()


def _refuse_work(monkeypatch):
    """Make training here, DiffROAR's retraining and unlearning fail loudly: a resumed run must need none."""
    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run recomputed a stored result")

    monkeypatch.setattr("gradaudit.jobs.subjects.train.fit", refuse)
    monkeypatch.setattr("gradaudit.audit.roar.fit_ensemble", refuse)
    monkeypatch.setattr("gradaudit.unlearn.methods.Unlearner.__call__", refuse)


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    assert cli.main([*AUDIT, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("changed, named", [
    (["--fill", "mean"], "fill: 0.0 -> mean"),
    (["--eps", "0.2"], "adversary.eps: 0.3 -> 0.2"),
    (["--seed", "1"], "seed: 0 -> 1"),
    (["--recipe", "lr=0.01"], "retrain-recipe.lr: 0.001 -> 0.01"),
    (["--seeds-per-model", "2"], "seeds-per-model: 1 -> 2"),
    (["--methods", "saliency,smoothgrad,random"], 'methods: ["saliency", "random"] -> ["saliency", "smoothgrad"'),
])
def test_audit_rerun_with_other_settings_is_refused_before_anything_is_written(audit_run, changed, named, capsys):
    before = _fingerprint(audit_run)
    capsys.readouterr()
    assert cli.main([*AUDIT, *changed, "--out", str(audit_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradaudit: error: ") and err.count("\n") == 1, err
    assert named in err and "use a new --out" in err
    assert _fingerprint(audit_run) == before


def test_another_command_into_an_audit_folder_is_refused(audit_run, capsys):
    before = _fingerprint(audit_run)
    assert cli.main([*UNLEARN, "--out", str(audit_run)]) == 2
    assert "holds a Preset run; this is a UnlearnPreset run" in capsys.readouterr().err
    assert _fingerprint(audit_run) == before


def test_audit_rerun_with_only_where_it_runs_changed_resumes_without_recomputing(audit_run, monkeypatch):
    stored = _results(audit_run)
    _refuse_work(monkeypatch)
    assert cli.main([*AUDIT, "--cpus-per-task", "2", "--out", str(audit_run)]) == 0
    assert _results(audit_run) == stored


def test_unlearn_rerun_is_refused_with_other_settings_and_resumes_with_the_same(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli.main([*UNLEARN, "--out", str(out)]) == 0
    before, stored = _fingerprint(out), _results(out)
    capsys.readouterr()
    for changed, named in ((["--threshold", "0.3"], "threshold: 0.5 -> 0.3"),
                           (["--forget-fraction", "0.2"], "forget-fraction: 0.1 -> 0.2")):
        assert cli.main([*UNLEARN, *changed, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, err
        assert _fingerprint(out) == before
    _refuse_work(monkeypatch)
    assert cli.main([*UNLEARN, "--out", str(out)]) == 0
    assert _results(out) == stored


def test_explain_out_dir_answers_for_its_settings(tmp_path, capsys):
    from PIL import Image
    from usernets import grey_cnn

    torch.manual_seed(0)
    torch.save(grey_cnn().state_dict(), tmp_path / "w.pt")
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(28, 28) * 255).byte().numpy()).save(tmp_path / "images" / f"{i}.png")
    out = tmp_path / "maps"
    args = ["explain", "--model", "usernets:grey_cnn", "--weights", str(tmp_path / "w.pt"), "--input-dir",
            str(tmp_path / "images"), "--out-dir", str(out), "--shard-size", "2"]
    assert cli.main([*args, "--method", "saliency"]) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli.main([*args, "--method", "saliency,ig"]) == 2
    err = capsys.readouterr().err
    assert 'methods: ["saliency"] -> ["saliency", "ig"]' in err and "use a new --out-dir" in err
    torch.manual_seed(1)
    torch.save(grey_cnn().state_dict(), tmp_path / "w.pt")                 # other weights, same file name
    assert cli.main([*args, "--method", "saliency"]) == 2
    assert "weights-sha256" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def _another_run(folder, kind):
    """``folder`` as another run of ``kind`` left it: its settings (other than any preset's) and a model file."""
    store = Store(folder / "results.sqlite")
    try:
        store.put("settings", {"run": "0"}, {"settings": {"seed": 12345}, "preset": kind})
    finally:
        store.close()
    (folder / "models").mkdir()
    torch.save({}, folder / "models" / "standard-0.pt")


@pytest.mark.parametrize("command, kind", [
    (["audit"], "Preset"),
    (["audit", "--preset", "tiny"], "Preset"),
    (["evaluate", "--preset", "tiny"], "EvaluatePreset"),
    (["unlearn", "--preset", "tiny"], "UnlearnPreset"),
    (["influence", "--preset", "tiny"], "InfluencePreset"),
])
def test_an_input_error_is_reported_as_such_over_another_runs_default_folder(command, kind, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / cli.default_out(command[0], command[-1] if len(command) > 1 else "quick")
    _another_run(folder, kind)
    before = _fingerprint(folder)
    assert cli.main([*command, "--data", f"folder:{tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert err == f"gradaudit: error: --data 'folder:{tmp_path / 'nowhere'}': {tmp_path / 'nowhere'} does not exist\n"
    assert _fingerprint(folder) == before
    assert cli.main(command) == 2                      # the same folder with good inputs: the settings refusal
    assert "holds results made with other settings (" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--models", "a=usernets:grey_cnn@missing.pt"], "missing.pt does not exist"),
    (["--methods", "saliency,gradcam", "--layer", "conv9"], "--layer: model 'trained here': layer 'conv9' is not"),
    (["--retrain", "usernets:not_a_classifier"], "returned [2, 1, 28, 28] for a batch of 2 images"),
])
def test_audit_checks_models_and_layers_before_its_run_folder(arguments, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    idx_folder(tmp_path / "idx", train=30, test=9)
    _another_run(tmp_path / "runs" / "tiny", "Preset")
    before = _fingerprint(tmp_path / "runs" / "tiny")
    assert cli.main(["audit", "--preset", "tiny", "--data", f"idx:{tmp_path / 'idx'}", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradaudit: error: ") and err.count("\n") == 1 and message in err, err
    assert _fingerprint(tmp_path / "runs" / "tiny") == before


def test_influence_text_checks_its_layers_before_its_run_folder(folder, tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat\nthe dog ran in the park\n")
    out = tmp_path / "run"
    assert cli.main(["influence-text", "--model", folder, "--train", str(tmp_path / "corpus.txt"), "--prompt",
                     "the cat", "--completion", " sat", "--out", str(out), "--layers", "nothing_matches"]) == 2
    err = capsys.readouterr().err.splitlines()                 # after transformers' progress bar
    assert err[-1].startswith("gradaudit: error: --layers: layers='nothing_matches' matches no")
    assert not out.exists()


def test_explain_out_dir_is_not_touched_by_a_bad_model_or_layer(tmp_path, capsys):
    from PIL import Image
    from usernets import grey_cnn

    torch.save(grey_cnn().state_dict(), tmp_path / "w.pt")
    (tmp_path / "images").mkdir()
    Image.fromarray((torch.rand(28, 28) * 255).byte().numpy()).save(tmp_path / "images" / "0.png")
    args = ["explain", "--input-dir", str(tmp_path / "images"), "--out-dir", str(tmp_path / "maps")]
    for wrong, message in ((["--model", "usernets:nothing", "--method", "saliency"], "nothing"),
                           (["--model", "usernets:grey_cnn", "--method", "gradcam", "--layer", "conv9"],
                            "layer 'conv9' is not")):
        assert cli.main([*args, *wrong, "--weights", str(tmp_path / "w.pt")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gradaudit: error: ") and message in err, err
        assert not (tmp_path / "maps").exists()


def test_each_preset_writes_its_own_default_folder_and_the_demos_use_it():
    from gradaudit.jobs.presets import EVALUATE_PRESETS, INFLUENCE_PRESETS, PRESETS, UNLEARN_PRESETS

    commands = {"audit": PRESETS, "unlearn": UNLEARN_PRESETS, "evaluate": EVALUATE_PRESETS,
                "influence": INFLUENCE_PRESETS}
    folders = [cli.default_out(command, name) for command, presets in commands.items() for name in presets]
    assert len(set(folders)) == len(folders) == 10
    assert cli.default_out("audit", "quick") == "runs/quick" and cli.default_out("audit", "tiny") == "runs/tiny"
    demos = re.findall(r"/gradaudit (\w+) --preset (\w+) .*--out (\S+)",
                       (Path(__file__).parents[1] / "Makefile").read_text())
    assert len(demos) == 5
    assert all(out == cli.default_out(command, name) for command, name, out in demos), demos
