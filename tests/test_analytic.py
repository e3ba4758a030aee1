"""Analytic truths: linear models, IG completeness, CAM, NormGrad and the grid by brute force."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close_rel
from nets import double, gap_cnn, smooth_cnn
from torch import nn

import gradaudit as ga
from gradaudit.methods.layer_saliency import AGGREGATES, VIRTUALS


def linear_model():
    torch.manual_seed(0)
    return nn.Linear(6, 3).double().eval()


def test_gradient_of_linear_model_is_weight_row():
    model, x = linear_model(), torch.randn(4, 6, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 2])
    grad = ga.Saliency(abs=False)(model, x, target)
    assert torch.allclose(grad, model.weight[target].detach())
    assert torch.allclose(ga.InputXGradient()(model, x, target), x * model.weight[target].detach())


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                  "riemann_trapezoid"])
def test_integrated_gradients_exact_on_linear_model(rule):
    model, x = linear_model(), torch.randn(4, 6, dtype=torch.float64)
    attr, delta = ga.IntegratedGradients(steps=3, rule=rule, baseline=0.5).with_delta(model, x, 1)
    assert torch.allclose(attr, (x - 0.5) * model.weight[1].detach())
    assert delta.abs().max() < 1e-12


def test_completeness_gap_shrinks_to_below_1e4_relative():
    model = double(smooth_cnn())
    torch.manual_seed(1)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    gaps = {}
    for steps in (2, 8, 64):
        attr, delta = ga.IntegratedGradients(steps=steps).with_delta(model, x, 0)
        with torch.no_grad():
            span = (model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]).abs()
        gaps[steps] = (delta.abs() / span).max().item()
    assert gaps[64] < 1e-4
    assert gaps[64] < gaps[8] < gaps[2]


def test_gradcam_equals_cam_after_global_average_pooling():
    model = double(gap_cnn())
    torch.manual_seed(2)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    features = model[:4](x)                       # [B, K, h, w] before pooling
    weights = model[6].weight.detach()            # [classes, K]
    cam = torch.einsum("k,bkhw->bhw", weights[1], features).clamp(min=0)
    h, w = features.shape[2:]
    assert_close_rel(ga.GradCAM("3", upsample=False)(model, x, 1) * (h * w), cam)


def _layer_pair(seed=3, channels=3, size=5):
    torch.manual_seed(seed)
    shape = (2, channels, size, size)
    return torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)


def _materialised(a, g, virtual):
    """[B, h, w, N] all parameter-gradient values at each location, built explicitly."""
    b, c, h, w = a.shape
    at, gt = a.permute(0, 2, 3, 1), g.permute(0, 2, 3, 1)           # [B, h, w, C]
    patch = F.unfold(a, 3, padding=1).view(b, c, 9, h, w).permute(0, 3, 4, 1, 2)  # [B, h, w, C, 9]
    if virtual == "scaling":
        return at * gt
    if virtual == "bias":
        return gt
    if virtual == "conv1x1":
        return (at[..., :, None] * gt[..., None, :]).flatten(3)
    if virtual == "conv3x3":
        return (patch.flatten(3)[..., :, None] * gt[..., None, :]).flatten(3)
    return (patch * gt[..., None]).flatten(3)                          # depthwise3x3


def _aggregate(values, aggregate):
    return {
        "sum": lambda v: v.sum(-1), "norm": lambda v: v.norm(dim=-1),
        "filter_norm": lambda v: v.clamp(min=0).norm(dim=-1), "max": lambda v: v.amax(-1),
    }[aggregate](values)


@pytest.mark.parametrize("virtual", VIRTUALS)
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_every_grid_cell_equals_brute_force(virtual, aggregate):
    from gradaudit.methods.layer_saliency import grid_map

    a, g = _layer_pair()
    assert_close_rel(grid_map(a, g, virtual, aggregate), _aggregate(_materialised(a, g, virtual), aggregate), 1e-10)


@pytest.mark.parametrize("virtual,conv", [("conv3x3", lambda c: nn.Conv2d(c, c, 3, padding=1, bias=False)),
                                          ("depthwise3x3", lambda c: nn.Conv2d(c, c, 3, padding=1, groups=c,
                                                                               bias=False)),
                                          ("conv1x1", lambda c: nn.Conv2d(c, c, 1, bias=False))])
def test_materialised_values_are_the_virtual_layers_weight_gradient(virtual, conv):
    """Summed over locations, the per-location values are the real weight gradient of an
    identity conv inserted after the layer, so the brute force above is the paper's object."""
    a, g = _layer_pair(channels=2, size=4)
    layer = conv(2).double()
    with torch.no_grad():
        layer.weight.zero_()
        centre = (layer.weight.shape[2] // 2, layer.weight.shape[3] // 2)
        for ch in range(2):
            layer.weight[ch, 0 if virtual == "depthwise3x3" else ch][centre] = 1.0
    out = layer(a)
    assert torch.allclose(out, a)
    (weight_grad,) = torch.autograd.grad((out * g).sum(), layer.weight)
    total = _materialised(a, g, virtual).sum((0, 1, 2))
    c = 2
    if virtual == "conv1x1":
        expected = weight_grad.view(c, c).t().flatten()              # [in, out]
    elif virtual == "conv3x3":
        expected = weight_grad.view(c, c, 9).permute(1, 2, 0).flatten()  # [in, 9, out]
    else:
        expected = weight_grad.view(c, 9).flatten()                  # [C, 9]
    assert torch.allclose(total, expected)


def test_normgrad_is_product_of_norms_and_named_cells_match_grid():
    model = double(gap_cnn())
    torch.manual_seed(4)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    act = model[:2](x)
    out = model[2:](act)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), act)
    brute = act.norm(dim=1) * grad.norm(dim=1)
    assert_close_rel(ga.NormGrad("1", upsample=False)(model, x, 0), brute)
    assert_close_rel(ga.NormGrad("1", selective=True)(model, x, 0),
                     ga.LayerSaliency("1", virtual="conv1x1", aggregate="filter_norm")(model, x, 0))
    assert_close_rel(ga.LinearApprox("1", upsample=False)(model, x, 0), (act * grad).sum(1))


def test_combine_is_product_of_normalised_upsampled_maps():
    model = double(gap_cnn())
    torch.manual_seed(5)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    parts = [ga.NormGrad("1"), ga.GradCAM("3"), ga.SmoothGradCAMPlusPlus("3", samples=2)]
    maps = [ga.heatmap(p(model, x, 2), normalize=True) for p in parts]
    assert_close_rel(ga.Combine(parts)(model, x, 2), maps[0] * maps[1] * maps[2], 1e-10)


def test_gradcam_plus_plus_closed_form_and_smooth_variant_without_noise():
    model = double(gap_cnn())
    torch.manual_seed(6)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    act = model[:4](x)
    (g,) = torch.autograd.grad(model[4:](act)[:, 1].sum(), act)
    total = act.sum((2, 3), keepdim=True)
    alpha = g**2 / (2 * g**2 + total * g**3)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)
    expected = (weights * act).sum(1).clamp(min=0)
    assert_close_rel(ga.GradCAMPlusPlus("3", upsample=False)(model, x, 1), expected, 1e-10)
    smooth = ga.SmoothGradCAMPlusPlus("3", samples=3, sigma=0.0, upsample=False)(model, x, 1)
    assert_close_rel(smooth, expected, 1e-10)


def test_smooth_gradcam_plus_plus_averages_powers_before_the_weights():
    from gradaudit.engine.noise import GaussianNoise, noise_scale
    from gradaudit.methods.cam import gradcam_plus_plus

    model = double(gap_cnn())
    torch.manual_seed(7)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    n, seed = 4, 3
    scale = noise_scale(x, 0.2, None)
    powers = [0, 0, 0]
    draws = GaussianNoise(seed, len(x), x.shape[1:], x.dtype)
    for k in range(n):
        noisy = x + scale.view(-1, 1, 1, 1) * draws.rows(torch.arange(len(x)), torch.full((len(x),), k))
        act = model[:4](noisy)
        (g,) = torch.autograd.grad(model[4:](act)[:, 0].sum(), act)
        powers = [p + g**i / n for p, i in zip(powers, (1, 2, 3), strict=False)]
    expected = gradcam_plus_plus(model[:4](x).detach(), *powers)
    ours = ga.SmoothGradCAMPlusPlus("3", samples=n, noise=0.2, seed=seed, upsample=False)(model, x, 0)
    assert_close_rel(ours, expected, 1e-10)
