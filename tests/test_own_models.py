"""`gradaudit audit` on the user's own data and models: end to end on IDX and CIFAR-10 binary files
with factories from a user module, resume after kill -9, and one clear error line per misfit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datafiles import cifar10_folder, idx_folder, npz_file
from helpers import kill_once_rows_appear, stored_rows

from gradaudit import cli, data, train
from gradaudit.store import Store

TESTS = Path(__file__).parent


def _trained_pair(spec, factory, folder, eps):
    """A standard and a PGD-trained model of ``factory`` on ``spec``, saved as state dicts in ``folder``."""
    part = data.load(spec, "train")
    paths = {}
    for name, seed, adversary in (("std", 0, None), ("rob", 1, train.PGD(norm="linf", eps=eps, steps=3))):
        torch.manual_seed(seed)
        model = train.fit(factory(), part, epochs=4, lr=1e-2, seed=seed, adversary=adversary, progress=False)
        paths[name] = folder / f"{name}.pt"
        torch.save(model.state_dict(), paths[name])
    return paths


@pytest.mark.slow
def test_idx_files_and_user_models_end_to_end_with_resume_after_kill_9(tmp_path):
    from usernets import grey_cnn

    idx_folder(tmp_path / "idx")
    weights = _trained_pair(f"idx:{tmp_path / 'idx'}", grey_cnn, tmp_path, eps=0.1)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", "--data", f"idx:{tmp_path / 'idx'}",
            "--models", f"standard=usernets:grey_cnn@{weights['std']},robust=usernets:grey_cnn@{weights['rob']}",
            "--methods", "saliency,random", "--fractions", "0.05,0.1,0.2,0.3", "--repeats", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    store = out / "results.sqlite"
    before = kill_once_rows_appear(first, store)
    cells = 2 * 4 * 2 * 2                                  # methods x fractions x repeats x models
    assert 0 < len(before) < cells
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    after = stored_rows(store)
    assert after[:len(before)] == before and len(after) == len(set(after)) == cells
    saved = Store(store)
    try:
        assert {r["model"] for r in saved.rows("diffroar")} == {"standard", "robust"}
        assert not saved.rows("signal_mass")                         # no ground truth on user data
        described = {r["what"]: r["description"] for r in saved.rows("inputs")}
    finally:
        saved.close()
    assert described["data train"].startswith("300 images 1x28x28, 3 classes (idx:")
    assert described["DiffROAR retrains"].startswith("usernets:grey_cnn")
    page = (out / "report.html").read_text()
    assert "Data and models" in page and "model robust" in page and "usernets:grey_cnn" in page
    assert "vs the Random control on model standard" in second.stdout
    assert (out / "figures" / "standard.png").exists() and (out / "figures" / "robust.png").exists()


@pytest.mark.slow
def test_cifar10_binaries_with_batchnorm_models_a_layer_method_and_a_recipe(tmp_path, capsys):
    from usernets import colour_cnn

    cifar10_folder(tmp_path / "cifar")
    spec = f"cifar10:{tmp_path / 'cifar'}"
    weights = _trained_pair(spec, colour_cnn, tmp_path, eps=2 / 255)
    code = cli.main(["audit", "--preset", "tiny", "--data", spec, "--models",
                     f"a/0=usernets:colour_cnn@{weights['std']},a/1=usernets:colour_cnn@{weights['rob']}",
                     "--methods", "saliency,gradcam,random", "--layer", "0", "--recipe", "optimizer=sgd,lr=0.05",
                     "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    saved = Store(tmp_path / "run" / "results.sqlite")
    try:
        rows = saved.rows("diffroar")
        described = {r["what"]: r["description"] for r in saved.rows("inputs")}
    finally:
        saved.close()
    assert {(r["model"], r["method"]) for r in rows} == {(m, n) for m in ("a/0", "a/1")
                                                         for n in ("Saliency", "GradCAM(0)", "Random")}
    assert "sgd lr 0.05" in described["DiffROAR retrains"] and "3x32x32" in described["data test"]


def test_without_models_the_pair_is_trained_on_the_users_data(tmp_path):
    from gradaudit.jobs.audit import run
    from gradaudit.jobs.presets import COMMANDS

    npz_file(tmp_path / "d.npz")
    run(COMMANDS["audit"].preset("tiny", data=f"npz:{tmp_path / 'd.npz'}", methods=("saliency", "random"),
                                  fractions=(0.2,), seeds_per_model=1), tmp_path / "run")
    saved = Store(tmp_path / "run" / "results.sqlite")
    try:
        assert {r["model"] for r in saved.rows("models")} == {"standard/0", "robust/0"}
        assert saved.rows("diffroar") and not saved.rows("signal_mass")
    finally:
        saved.close()


def _error(capsys, *args):
    code = cli.main(["audit", "--preset", "tiny", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gradaudit: error: ") and err.count("\n") == 1, err
    return err


def test_every_misfit_is_one_clear_error_line(tmp_path, capsys, monkeypatch):
    from usernets import grey_cnn

    monkeypatch.chdir(tmp_path)                # calls without --out default to runs/tiny here, not in the checkout
    idx_folder(tmp_path / "idx", train=30, test=9)
    good = tmp_path / "good.pt"
    torch.save(grey_cnn().state_dict(), good)
    idx = ["--data", f"idx:{tmp_path / 'idx'}", "--out", str(tmp_path / "run"), "--methods", "saliency"]

    def models(entry):
        return [*idx, "--models", entry]

    whole = tmp_path / "whole.pt"
    torch.save(grey_cnn(), whole)
    assert "holds pickled Python objects" in _error(capsys, *models(f"a=usernets:grey_cnn@{whole}"))
    assert "--trust-pickle" in _error(capsys, *models(f"a=usernets:grey_cnn@{whole}"))
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    err = _error(capsys, *models(f"a=usernets:grey_cnn@{other}"))
    assert "do not fit the model built by usernets:grey_cnn: missing keys 0.weight, 0.bias, 4.weight (+1 more)" in err
    assert "unexpected keys weight, bias" in err
    text = tmp_path / "notes.pt"
    text.write_text("weights? no")
    assert "is not a torch file" in _error(capsys, *models(f"a=usernets:grey_cnn@{text}"))
    assert "unknown scheme 'imagenet'" in _error(capsys, "--data", "imagenet:/x", "--out", str(tmp_path / "r"))
    assert "does not exist" in _error(capsys, "--data", f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    assert "has no class subfolders" in _error(capsys, "--data", f"folder:{tmp_path / 'empty'}")
    from PIL import Image

    for name, size in (("a", (10, 10)), ("b", (12, 10))):
        (tmp_path / "mixed" / name).mkdir(parents=True)
        Image.new("L", size).save(tmp_path / "mixed" / name / "0.png")
    assert "images differ in size" in _error(capsys, "--data", f"folder:{tmp_path / 'mixed'}")
    err = _error(capsys, *models(f"a=usernets:two_classes@{_saved('two_classes', tmp_path)}"))
    assert "the data's labels go up to 2, but model 'a' outputs only 2 classes" in err
    err = _error(capsys, *models(f"a=usernets:not_a_classifier@{_saved('not_a_classifier', tmp_path)}"))
    assert "returned [2, 1, 28, 28] for a batch of 2 images; a classifier must return logits [2, classes]" in err
    err = _error(capsys, *models(f"a=usernets:grey_cnn@{good}"), "--methods", "gradcam", "--layer", "conv9")
    assert "--layer: model 'a': layer 'conv9' is not a module of the model" in err
    for entry in ("a=usernets:grey_cnn", "usernets:grey_cnn@w.pt", "a=grey_cnn@w.pt", "a b=usernets:grey_cnn@w.pt"):
        assert "--models entry" in _error(capsys, *models(entry))
    one_class = tmp_path / "one.npz"
    import numpy as np

    np.savez(one_class, x=np.zeros((10, 4, 4), np.uint8), y=np.zeros(10, np.int64))
    assert "holds a single class ([0])" in _error(capsys, "--data", f"npz:{one_class}", "--out", str(tmp_path / "o"))
    earlier = Store(tmp_path / "earlier" / "results.sqlite")
    earlier.put("inputs", {"what": "model a"}, {"description": "older weights", "sha256": "0123456789ab"})
    earlier.close()
    err = _error(capsys, "--data", f"idx:{tmp_path / 'idx'}", "--models", f"a=usernets:grey_cnn@{good}",
                 "--methods", "saliency", "--out", str(tmp_path / "earlier"))
    assert "already holds results for model 'a' from other weights" in err
    assert "--recipe must be KEY=VALUE" in _error(capsys, "--recipe", "sgd")
    assert "unknown training setting 'speed'" in _error(capsys, "--recipe", "speed=3")
    assert "--size must be H,W" in _error(capsys, "--size", "32")


def _saved(factory, folder):
    import usernets

    path = folder / f"{factory}.pt"
    torch.save(getattr(usernets, factory)().state_dict(), path)
    return path


def test_the_error_reaches_the_shell_without_a_traceback(tmp_path):
    (tmp_path / "w.pt").write_text("not torch")
    result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--data", "idx:/nowhere", "--models",
                             f"a=usernets:grey_cnn@{tmp_path / 'w.pt'}"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(TESTS)}, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("gradaudit: error:") and "Traceback" not in result.stderr


def test_checking_a_model_leaves_it_as_found():
    from helpers import assert_unchanged, snapshot
    from usernets import colour_cnn

    from gradaudit.jobs.subjects import check_classifier

    model = colour_cnn()
    model[1].eval()                                  # mixed modes: the BatchNorm in eval, the rest training
    before = snapshot(model)
    check_classifier(model, "m", torch.rand(4, 3, 32, 32), 3)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="cannot take the data's images"):
        check_classifier(model, "m", torch.rand(4, 1, 28, 28), 3)
    assert_unchanged(model, before)


def test_diffroar_masks_every_channel_of_a_pixel_alike():
    from gradaudit.audit.roar import _per_input

    masks = torch.rand(4, 5, 6 * 7) > 0.5
    rgb = _per_input(masks, torch.zeros(5, 3, 6, 7))
    assert rgb.shape == (4, 5, 3, 6, 7)
    assert all(torch.equal(rgb[:, :, c].flatten(2), masks) for c in range(3))
    assert torch.equal(_per_input(masks, torch.zeros(5, 1, 6, 7)).flatten(2), masks)
    assert _per_input(torch.rand(2, 5, 10) > 0.5, torch.zeros(5, 10)).shape == (2, 5, 10)    # feature vectors


def test_recommend_reads_a_dataset_spec(tmp_path, capsys):
    from usernets import grey_cnn

    idx_folder(tmp_path / "idx", train=30, test=9)
    torch.save(grey_cnn().state_dict(), tmp_path / "w.pt")
    code = cli.main(["recommend", "--model", "usernets:grey_cnn", "--weights", str(tmp_path / "w.pt"), "--data",
                     f"idx:{tmp_path / 'idx'}", "--examples", "2", "--samples", "16"])
    out = capsys.readouterr().out
    assert code == 0 and ("<- recommended" in out or "<- tied for best" in out) and "IntegratedGradients" in out
