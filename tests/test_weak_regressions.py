"""Tests whose expected value used to come from the code under test, redone against an independent truth.

Each test names the older test it supersedes (left in place in its own file).
"""

import torch
from helpers import assert_close_rel
from nets import double, gap_cnn
from torch import nn

import gradaudit as ga
from gradaudit.engine.noise import GaussianNoise


def _gradcam_plus_plus_by_hand(a, g1, g2, g3):
    """Grad-CAM++'s closed form (Chattopadhyay et al. 2018; exponential score), written out here:
    alpha = g2 / (2 g2 + sum_ij(a) g3) (0 where that is 0), w_k = sum_ij alpha ReLU(g1), map = ReLU(sum_k w_k a_k)."""
    total = a.sum((2, 3), keepdim=True)
    denominator = 2 * g2 + total * g3
    alpha = torch.where(denominator != 0, g2 / denominator, torch.zeros_like(g2))
    weights = (alpha * g1.clamp(min=0)).sum((2, 3), keepdim=True)
    return (weights * a).sum(1).clamp(min=0)


def test_smooth_gradcam_plus_plus_averages_the_gradient_powers_over_noisy_copies():
    """Supersedes test_analytic.py::test_smooth_gradcam_plus_plus_averages_powers_before_the_weights, whose expected
    map came from the library's own ``gradcam_plus_plus`` at layer "3", right before global average pooling, where
    the gradient is the same for every input (so mean(g^2) = mean(g)^2 and no averaging bug could show)."""
    model = double(gap_cnn())
    with torch.no_grad():      # logits x 100: sum_ij(a) g3 is then of the order of g2, so alpha depends on the powers
        model[6].weight.mul_(100)
    torch.manual_seed(7)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    n, seed, noise = 4, 3, 0.2
    sigma = noise * (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))          # SmoothGrad's sigma: a share of each range
    draws = GaussianNoise(seed, len(x), x.shape[1:], x.dtype)        # the method's noise: a function of (seed, e, k)
    grads = []
    for k in range(n):
        eps = draws.rows(torch.arange(len(x)), torch.full((len(x),), k))
        act = model[:2](x + sigma.view(-1, 1, 1, 1) * eps)              # layer "1": conv -> ReLU
        grads.append(torch.autograd.grad(model[2:](act)[:, 0].sum(), act)[0])
    g = torch.stack(grads)                                               # [samples, B, C, h, w]
    clean = model[:2](x).detach()                                        # activations of the clean input
    expected = _gradcam_plus_plus_by_hand(clean, g.mean(0), (g**2).mean(0), (g**3).mean(0))
    ours = ga.SmoothGradCAMPlusPlus("1", samples=n, noise=noise, seed=seed, upsample=False)(model, x, 0)
    assert expected.abs().max() > 0
    assert_close_rel(ours, expected, 1e-10)
    # Here the gradient moves with the noise: powers of the mean gradient give a clearly different map (~33% off).
    mean = g.mean(0)
    assert (_gradcam_plus_plus_by_hand(clean, mean, mean**2, mean**3) - expected).abs().max() > 0.2 * expected.max()


def test_kernelshap_patches_get_the_shapley_value_of_their_block():
    """Supersedes the groups=2 case of test_perturb.py::test_kernelshap_recovers_linear_shapley_values, whose expected
    per-group values were summed over the library's own ``feature_ids``: any partition of the image passed."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(5 * 6, 2)).double().eval()
    torch.manual_seed(2)
    x = torch.randn(3, 1, 5, 6, dtype=torch.float64)
    attr = ga.KernelSHAP(samples=400, feature_groups=2, baseline=0.0)(model, x, 1)
    contribution = model[1].weight[1].detach().view(1, 1, 5, 6) * x               # w * (x - 0): an additive game
    # A 2 x 2 patch (the last row's patches 1 x 2) is one player: its Shapley value is the sum of its pixels'
    # contributions, and every pixel of the patch shows it.
    expected = torch.empty_like(x)
    for i in range(5):
        for j in range(6):
            rows, cols = slice(i // 2 * 2, i // 2 * 2 + 2), slice(j // 2 * 2, j // 2 * 2 + 2)
            expected[:, :, i, j] = contribution[:, :, rows, cols].sum((2, 3))
    assert_close_rel(attr, expected, 1e-6)
    with torch.no_grad():
        gap = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    corners = attr[:, 0, ::2, ::2]                                                 # one pixel of each patch
    assert torch.allclose(corners.flatten(1).sum(1), gap, atol=1e-6)             # efficiency
