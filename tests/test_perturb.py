"""Perturbation methods: Captum's Occlusion, exact recovery on linear models, seeds, chunking."""

import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from helpers import assert_close_rel
from nets import double, small_cnn
from torch import nn

import gradaudit as ga
from gradaudit.methods.perturb import feature_ids, ridge


@pytest.mark.parametrize("window,stride", [(4, 2), (3, 3), ((2, 4), (1, 2)), (8, 8)])
def test_occlusion_equals_captum(window, stride):
    model = double(small_cnn())
    torch.manual_seed(0)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    ours = ga.Occlusion(window=window, stride=stride, fill=0.5)(model, x, 1, batch_size=7)
    w, s = ((window, window), (stride, stride)) if isinstance(window, int) else (window, stride)
    theirs = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(1, *w), strides=(1, *s), baselines=0.5,
                                              target=1)
    assert_close_rel(ours, theirs)          # the oracle tolerance of test_captum.py


def linear_image_model(channels=1, size=4, classes=2):
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes)).double().eval()


@pytest.mark.parametrize("groups", [None, 2])
def test_kernelshap_recovers_linear_shapley_values(groups):
    model = linear_image_model()
    torch.manual_seed(2)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    attr = ga.KernelSHAP(samples=400, feature_groups=groups, baseline=0.0)(model, x, 1)
    contribution = model[1].weight[1].detach().view(1, 1, 4, 4) * x                  # w * (x - 0)
    if groups is None:
        assert_close_rel(attr, contribution, 1e-6)
    else:
        ids, d = feature_ids(2, (1, 4, 4))
        per_group = torch.zeros(3, d, dtype=torch.float64).index_add_(1, ids.flatten(), contribution.flatten(1))
        assert_close_rel(attr, per_group[:, ids], 1e-6)
    with torch.no_grad():
        gap = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    if groups is None:
        assert torch.allclose(attr.flatten(1).sum(1), gap, atol=1e-6)


def test_lime_and_clime_recover_linear_models():
    model = linear_image_model()
    torch.manual_seed(3)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    w = model[1].weight[0].detach().view(1, 1, 4, 4)
    lime = ga.LIME(samples=300, penalty=1e-9)(model, x, 0)
    assert_close_rel(lime, (w * x), 1e-6)                   # z-space coefficients: w_i x_i
    clime = ga.CLIME(samples=300, sigma=0.2, penalty=0.0)(model, x, 0)
    assert_close_rel(clime, w.expand_as(x), 1e-6)          # x-space coefficients: the gradient


def test_ridge_primal_and_dual_agree():
    torch.manual_seed(4)
    design, targets, weights = torch.randn(30, 8).double(), torch.randn(2, 30).double(), torch.rand(30).double()
    wide = torch.randn(8, 30).double()
    primal, dual = ridge(design, targets, weights, 0.5), ridge(wide, targets[:, :8], weights[:8], 0.5)
    assert primal.shape == (2, 9) and dual.shape == (2, 31)

    def normal_equations(x, t, w, penalty):      # (X'WX + P) b = X'Wt, intercept column last and unpenalised
        xc = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        p = penalty * torch.eye(xc.shape[1], dtype=x.dtype)
        p[-1, -1] = 0
        return torch.linalg.solve(xc.T @ (w[:, None] * xc) + p, xc.T @ (w[:, None] * t.T)).T

    torch.testing.assert_close(primal, normal_equations(design, targets, weights, 0.5), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(dual, normal_equations(wide, targets[:, :8], weights[:8], 0.5), rtol=1e-8, atol=1e-10)
    xc = torch.cat([design, torch.ones(30, 1, dtype=torch.float64)], 1)
    exact = ridge(design, targets, weights, 0.0)
    direct = torch.linalg.lstsq(xc * weights.sqrt()[:, None], (targets * weights.sqrt()).T).solution.T
    assert torch.allclose(exact, direct, atol=1e-8)


@pytest.mark.parametrize("method", [ga.LIME(samples=60, feature_groups=2), ga.KernelSHAP(samples=60, feature_groups=2),
                                    ga.CLIME(samples=40), ga.Occlusion(window=2, stride=1)],
                         ids=lambda m: type(m).__name__)
def test_seed_chunking_and_shape(method):
    model = double(small_cnn())
    torch.manual_seed(5)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    first = method(model, x, batch_size=5)
    assert first.shape == x.shape and torch.isfinite(first).all()
    assert_close_rel(method(model, x, batch_size=64), first, 1e-9)
    if hasattr(method, "samples"):
        other = type(method)(**{**method.__dict__, "seed": 9})(model, x)
        assert not torch.allclose(other, first)


def test_feature_groups_validation():
    ids, d = feature_ids(3, (2, 7, 7))
    assert d == 9 and ids.shape == (2, 7, 7) and torch.equal(ids[0], ids[1])
    with pytest.raises(ValueError, match="feature_groups must be None, a patch size"):
        feature_ids(torch.zeros(3, 3), (1, 7, 7))
    with pytest.raises(ValueError, match="window 9 / stride 2 do not fit"):
        ga.Occlusion(window=9)(small_cnn(), torch.randn(1, 1, 8, 8))
