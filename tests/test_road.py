"""ROAD's noisy linear imputation against a sparse direct solve; MoRF/LeRF; the mask-leak check."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import gradaudit as ga
from gradaudit import audit, models
from gradaudit.audit.imputation import noisy_linear_impute


def _reference():
    """The per-pixel sparse direct solve of ``benchmarks/bench_road.py`` (ROAD's own way): one
    reference serves the benchmark and this test."""
    path = Path(__file__).parents[1] / "benchmarks" / "bench_road.py"
    spec = importlib.util.spec_from_file_location("bench_road", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.loop_solve


direct_solve = _reference()


def test_imputation_equals_a_sparse_direct_solve():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 9, 7, generator=generator)
    removed = torch.rand(3, 9, 7, generator=generator) < 0.5
    ours = noisy_linear_impute(x, removed, noise=0.0)
    for i in range(3):
        for c in range(2):
            expected = direct_solve(x[i, c].double().numpy(), removed[i].numpy())
            assert np.abs(ours[i, c].double().numpy() - expected).max() < 1e-4
    assert torch.equal(ours[~removed.unsqueeze(1).expand_as(x)], x[~removed.unsqueeze(1).expand_as(x)])


def test_imputation_noise_and_edge_cases():
    x = torch.full((1, 1, 6, 6), 0.5)
    removed = torch.zeros(1, 6, 6, dtype=torch.bool)
    removed[0, 2:4, 2:4] = True
    flat = noisy_linear_impute(x, removed, noise=0.0)
    assert torch.allclose(flat, x)                                 # a constant image stays constant
    noisy = noisy_linear_impute(x, removed, noise=0.01, seed=3)
    assert 0 < (noisy - x).abs().max() < 0.05 and torch.equal(noisy, noisy_linear_impute(x, removed, seed=3))
    everything = noisy_linear_impute(x, torch.ones(1, 6, 6, dtype=torch.bool), noise=0.0)
    assert torch.equal(everything, torch.zeros_like(x))            # nothing kept: nothing to interpolate
    with pytest.raises(TypeError, match="removed must be a bool tensor"):
        noisy_linear_impute(x, removed.float())


class FirstPixel(torch.nn.Module):
    """Predicts class 1 when pixel (0, 0) is bright: only that pixel matters."""

    def forward(self, x):
        score = (x[:, 0, 0, 0] - 0.5) * 20
        return torch.stack([-score, score], dim=1)


def test_road_morf_falls_for_the_true_pixel_and_not_for_random():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=generator) * 0.2
    y = torch.randint(0, 2, (64,), generator=generator)
    x[:, 0, 0, 0] = y.float()                            # the label is written in the first pixel
    data = type("D", (), {"x": x, "y": y})()
    oracle = ga.Occlusion(window=1, stride=1)
    rows = {r["method"]: r for r in audit.road({"oracle": oracle, "random": ga.Random()}, FirstPixel().eval(), data,
                                               fractions=(1 / 64,), limit=None).rows}
    assert rows["oracle"]["lerf_accuracy"] == 1.0 and rows["oracle"]["morf_accuracy"] < 0.75
    assert rows["oracle"]["gap_low"] > 0
    assert rows["random"]["gap_low"] <= 0 <= rows["random"]["gap_high"]


def test_mask_leak_is_at_chance_for_random_masks_and_high_for_a_class_mask():
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (300,), generator=generator)
    random_masks = torch.rand(1, 300, 1, 6, 6, generator=generator) < 0.5
    class_masks = random_masks.clone()
    class_masks[0, :, 0, 0, 0] = y.bool()                 # one mask pixel spells the class
    keep = torch.cat([random_masks, class_masks])
    accuracy = audit.mask_leak(lambda: models.mlp((1, 6, 6), 2, hidden=16), keep[:, :200], y[:200],
                               keep[:, 200:], y[200:], seeds=[0, 1], epochs=30, lr=1e-2)
    assert abs(accuracy[0].item() - 0.5) < 0.15 and accuracy[1].item() > 0.95


def _shown(x, keep, fill):
    """Every image of ``x`` as model m of an ensemble sees it: its own batches' ``where(keep[m], x, fill)``."""
    from gradaudit.train import ensemble

    every = torch.arange(len(x)).expand(len(keep), -1)
    return ensemble.masked_inputs(x, keep, fill, torch.arange(len(keep)).view(-1, 1), every)


def _assert_road_imputed(x, keep, shown, mean):
    """``shown[m]`` is ``x`` with the pixels outside ``keep[m]`` replaced by ROAD's imputation: the
    noise-free linear solve plus 0.01 * N(0, 1) noise (so neither 0 nor the mean where it differs)."""
    assert len(shown) == 2                                     # top-k and bottom-k kept, one level
    for m in range(len(shown)):
        removed = ~keep[m].expand_as(x)
        assert removed.float().mean().item() == pytest.approx(0.5, abs=0.01)
        assert torch.equal(shown[m][~removed], x[~removed])                  # kept pixels untouched
        changed = shown[m] != x
        assert not (shown[m][changed] == 0).any(), "removed pixels filled with zeros"
        assert not (shown[m][changed] == mean).any(), "removed pixels filled with the mean"
        assert changed[removed].float().mean() > 0.99             # the noise moves (nearly) every removed pixel
        noise = (shown[m] - noisy_linear_impute(x, removed, noise=0.0))[removed]
        assert noise.abs().max() < 0.06 and abs(noise.mean().item()) < 1e-3, (noise.abs().max(), noise.mean())
        assert noise.std().item() == pytest.approx(0.01, rel=0.05)


def test_diffroar_with_road_fill_trains_on_imputed_images(monkeypatch):
    from gradaudit import data
    from gradaudit.audit import roar

    train, test = data.blockmnist("train", copies=1), data.blockmnist("test", copies=1)
    train.x, train.y, test.x, test.y = train.x[:64], train.y[:64], test.x[:32], test.y[:32]
    seen = {"train": [], "test": []}
    fit, accuracy = roar.fit_ensemble, roar.ensemble_accuracy

    def spy_fit(model_fn, x, y, keep, fill, *args, **kwargs):      # the retraining, not the ceiling or leak check
        if keep is not None and torch.equal(x, train.x):
            seen["train"].append((x, keep, _shown(x, keep, fill)))
        return fit(model_fn, x, y, keep, fill, *args, **kwargs)

    def spy_accuracy(models, x, y, keep=None, fill=0.0, *args, **kwargs):
        if keep is not None and torch.equal(x, test.x):
            seen["test"].append((x, keep, _shown(x, keep, fill)))
        return accuracy(models, x, y, keep, fill, *args, **kwargs)

    monkeypatch.setattr(roar, "fit_ensemble", spy_fit)
    monkeypatch.setattr(roar, "ensemble_accuracy", spy_accuracy)
    audited = torch.nn.Identity().eval()
    result = audit.diffroar({"random": ga.Random()}, audited, train, test, fill="road", fractions=(0.5,),
                            repeats=1, epochs=1, leak_check=True, progress=False,
                            model_fn=lambda: models.mlp((1, 56, 28), 2, hidden=8))
    assert len(seen["train"]) == 1 and len(seen["test"]) == 1
    for x, keep, shown in seen["train"] + seen["test"]:
        _assert_road_imputed(x, keep, shown, train.x.mean())
    row = result.rows[0]
    assert row["fill"] == "road" and 0 <= row["bottom_accuracy"] <= 1 and 0 <= row["top_accuracy"] <= 1
    assert row["tie_break"] == "random (seeded)" and row["tied_share"] < 0.01
    assert set(result.extra["leak"][0]) >= {"top_mask_accuracy", "bottom_mask_accuracy"}
    with pytest.raises(ValueError, match="fill must be 'mean', 'road' or a number"):
        audit.diffroar({"random": ga.Random()}, torch.nn.Identity(), train, test, fill="blur",
                       model_fn=lambda: models.mlp((1, 56, 28), 2, hidden=8))
