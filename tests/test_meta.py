"""MetaStep: one SGD step toward the class, the wrapped map, the weights restored bit for bit."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_unchanged, snapshot

import gradaudit as ga
from gradaudit import models


@pytest.fixture()
def net():
    torch.manual_seed(0)
    return models.small_cnn((1, 8, 8), 3, width=2).double().eval()


def test_meta_step_equals_a_manual_step_and_restores_the_model(net):
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    before = snapshot(net)
    got = ga.MetaStep(ga.Saliency(), lr=0.5)(net, x, y)
    assert_unchanged(net, before)
    for i in range(3):
        stepped = copy.deepcopy(net)
        loss = F.cross_entropy(stepped(x[i:i + 1]), y[i:i + 1])
        grads = torch.autograd.grad(loss, list(stepped.parameters()))
        with torch.no_grad():
            for p, g in zip(stepped.parameters(), grads, strict=False):
                p -= 0.5 * g
        assert torch.allclose(got[i:i + 1], ga.Saliency()(stepped, x[i:i + 1], y[i:i + 1]), atol=1e-12)
    assert torch.equal(ga.MetaStep(ga.Saliency(), lr=0.0)(net, x, y), ga.Saliency()(net, x, y))
    assert not torch.allclose(got, ga.Saliency()(net, x, y))


def test_meta_step_restores_the_model_after_an_error_and_checks_targets(net):
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    before = snapshot(net)
    with pytest.raises(ValueError, match="out of range"):
        ga.MetaStep(ga.GradCAM("conv2"))(net, x, torch.tensor([0, 7]))
    assert_unchanged(net, before)
    with pytest.raises(ValueError, match="layer 'nope'"):
        ga.MetaStep(ga.GradCAM("nope"))(net, x, 0)
    assert_unchanged(net, before)
    with pytest.raises(TypeError, match="MetaStep needs class targets"):
        ga.MetaStep(ga.Saliency())(net, x, ga.Contrast(0, 1))
    with pytest.raises(TypeError, match="needs a gradaudit method"):
        ga.MetaStep(lambda m, x, t: x)
    predicted = ga.MetaStep(ga.Saliency(), lr=0.0)(net, x)
    assert torch.equal(predicted, ga.Saliency()(net, x))
