"""Modified backward rules on every activation, module or functional; the target forms."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close_rel, assert_unchanged, snapshot
from nets import FunctionalAct, double, mlp, resnet_like
from torch import nn

import gradaudit as ga

ACTIVATIONS = {
    "relu": (nn.ReLU, F.relu), "leaky_relu": (lambda: nn.LeakyReLU(0.1), lambda t: F.leaky_relu(t, 0.1)),
    "prelu": (nn.PReLU, None), "silu": (nn.SiLU, F.silu), "gelu": (nn.GELU, F.gelu), "elu": (nn.ELU, F.elu),
    "relu_inplace": (lambda: nn.ReLU(inplace=True), lambda t: torch.relu_(t)),
    "silu_inplace": (lambda: nn.SiLU(inplace=True), lambda t: F.silu(t, inplace=True)),
    "tensor_method": (None, lambda t: t.relu()),
}


def analytic(model, act, x, target, rule):
    """Hand-derived backward through one hidden activation: W1^T rule(f'(z), W2[target])."""
    fc1, fc2 = (model[0], model[2]) if isinstance(model, nn.Sequential) else (model.fc1, model.fc2)
    z = fc1(x).detach().requires_grad_(True)
    (slope,) = torch.autograd.grad(act(z).sum(), z)
    upstream = fc2.weight[target].detach().expand_as(z)
    passed = (slope * upstream).clamp(min=0) if rule == "guided" else upstream.clamp(min=0)
    return passed @ fc1.weight.detach()


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("method,rule", [(ga.GuidedBackprop(), "guided"), (ga.Deconvnet(), "deconvnet")])
def test_rules_apply_to_modules_and_functional_calls(name, method, rule):
    module, functional = ACTIVATIONS[name]
    torch.manual_seed(5)
    x = torch.randn(4, 10, dtype=torch.float64)
    for model in filter(None, [module and double(mlp(activation=module)),
                               functional and double(FunctionalAct(functional))]):
        act = model[1] if isinstance(model, nn.Sequential) else model.fn
        reference = analytic(model, lambda t, act=act: act(t.clone()), x, 2, rule)
        assert_close_rel(method(model, x, 2), reference, 1e-10)


def test_rules_leave_ordinary_gradients_alone_afterwards():
    model, x = double(mlp(activation=nn.SiLU)), torch.randn(3, 10, dtype=torch.float64)
    plain = ga.Saliency(abs=False)(model, x, 0)
    ga.GuidedBackprop()(model, x, 0)
    assert torch.equal(ga.Saliency(abs=False)(model, x, 0), plain)


def test_a_rule_with_nothing_to_apply_to_is_refused_and_the_model_left_as_found():
    """No ReLU-like activation caught (tanh; a ReLU written as arithmetic): guided backprop, deconvnet and
    Guided Grad-CAM refuse instead of returning the plain gradient; DeepLIFT's rescale rule, exact on a
    linear model, is not refused there."""
    both = ((ga.GuidedBackprop(), "guided"), (ga.Deconvnet(), "deconvnet"))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3))
    for model, x, methods in ((mlp(activation=nn.Tanh), torch.randn(3, 10), both),
                              (FunctionalAct(lambda t: t * (t > 0)), torch.randn(3, 10), both),
                              (conv, torch.randn(3, 1, 4, 4), (*both, (ga.GuidedGradCAM("0"), "guided")))):
        model.train()
        next(model.parameters()).requires_grad_(False)
        before = snapshot(model)
        for method, rule in methods:
            with pytest.raises(ValueError, match=f"the '{rule}' backward rule .* needs a ReLU-like activation"), \
                    pytest.warns(UserWarning, match="train mode"):
                method(model, x, 0)
            assert_unchanged(model, before)
    linear = double(nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 3)))
    x = torch.randn(3, 10, dtype=torch.float64)
    assert_close_rel(ga.DeepLift()(linear, x, 2), x * (linear[1].weight[2] @ linear[0].weight), 1e-12)


def test_target_forms_agree():
    model = double(resnet_like())
    torch.manual_seed(6)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    grad = ga.Saliency(abs=False)
    by_int = grad(model, x, 2)
    assert torch.allclose(grad(model, x, torch.tensor([2, 2, 2])), by_int)
    assert torch.allclose(grad(model, x, lambda out: out[:, 2]), by_int)
    contrast = grad(model, x, ga.Contrast(2, 0))
    assert torch.allclose(contrast, by_int - grad(model, x, 0))
    assert torch.allclose(grad(model, x, ga.Contrast(0, 2)), -contrast)
    per_example = torch.tensor([0, 3, 1])
    mixed = grad(model, x, ga.Contrast(per_example, 2))
    for i, c in enumerate(per_example.tolist()):
        assert torch.allclose(mixed[i], grad(model, x[i:i + 1], ga.Contrast(c, 2))[0])
    predicted = model(x).argmax(1)
    assert torch.allclose(grad(model, x), grad(model, x, predicted))
    ig = ga.IntegratedGradients(steps=4)
    assert torch.allclose(ig(model, x), ig(model, x, predicted))
    assert torch.allclose(ga.Contrast(1, 0)(model(x)), model(x)[:, 1] - model(x)[:, 0])


def test_heatmap_reductions():
    attr = torch.tensor([[[[1.0, -2.0]], [[-3.0, 4.0]]]])  # [1, 2, 1, 2]
    assert torch.equal(ga.heatmap(attr), torch.tensor([[[4.0, 6.0]]]))
    assert torch.equal(ga.heatmap(attr, "sum"), torch.tensor([[[-2.0, 2.0]]]))
    assert torch.equal(ga.heatmap(attr, "max_abs"), torch.tensor([[[3.0, 4.0]]]))
    assert torch.allclose(ga.heatmap(attr, "l2"), torch.tensor([[[10**0.5, 20**0.5]]]))
    assert torch.equal(ga.heatmap(attr, normalize=True), torch.tensor([[[0.0, 1.0]]]))
