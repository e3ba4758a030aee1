"""Captum as the reference oracle: same model, same inputs, float64, <= 1e-5 relative."""

import pytest
import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from helpers import assert_close_rel
from nets import double, mlp, resnet_like, small_cnn, twin

import gradaudit as ga
from gradaudit.engine.noise import GaussianNoise

CASES = {
    "cnn": (lambda: double(small_cnn()), (5, 1, 8, 8), "3"),
    "resnet": (lambda: double(resnet_like()), (4, 3, 8, 8), "layer2.conv2"),
    "mlp": (lambda: double(mlp()), (6, 10), None),
}


def case(name):
    make, shape, layer = CASES[name]
    torch.manual_seed(10)
    model = make()
    return model, torch.randn(*shape, dtype=torch.float64), layer


def captum_model(name, model):
    """Captum cannot run guided rules on in-place ReLUs: give it the out-of-place twin."""
    return double(twin(model)) if name == "resnet" else model


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("abs_", [True, False])
def test_saliency(name, abs_):
    model, x, _ = case(name)
    target = torch.arange(len(x)) % 3
    ours = ga.Saliency(abs=abs_)(model, x, target)
    theirs = Saliency(model).attribute(x, target=target, abs=abs_)
    assert_close_rel(ours, theirs)


@pytest.mark.parametrize("name", CASES)
def test_input_x_gradient(name):
    model, x, _ = case(name)
    assert_close_rel(ga.InputXGradient()(model, x, 1), InputXGradient(model).attribute(x, target=1))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                  "riemann_trapezoid"])
def test_integrated_gradients(name, rule):
    model, x, _ = case(name)
    baseline = torch.full_like(x, 0.1)
    ours = ga.IntegratedGradients(steps=16, rule=rule, baseline=baseline)(model, x, 2, batch_size=7)
    theirs = IntegratedGradients(model).attribute(x, baselines=baseline, target=2, n_steps=16, method=rule)
    if rule == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n with halved ends (summing to (n-1)/n); the trapezoid
        # rule on linspace(0, 1, n) has step 1/(n-1). Ours is exact on linear paths (test_analytic).
        theirs = theirs * 16 / 15
    assert_close_rel(ours, theirs)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("kind,nt_type", [("mean", "smoothgrad"), ("square", "smoothgrad_sq"), ("var", "vargrad")])
def test_smoothgrad_matches_noise_tunnel_on_the_same_draw(name, kind, nt_type, monkeypatch):
    model, x, _ = case(name)
    samples, sigma, seed = 6, 0.3, 7
    b = len(x)
    # Captum lays rows out example-major (row = example * samples + sample): draw ours in that order.
    examples = torch.arange(b).repeat_interleave(samples)
    draws = GaussianNoise(seed, b, x.shape[1:], torch.float64)
    eps = sigma * torch.cat([draws.rows(examples[i:i + 1], torch.tensor([i % samples])) for i in range(b * samples)])
    monkeypatch.setattr(torch, "normal", lambda mean, std: eps.clone())
    theirs = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type=nt_type, nt_samples=samples, stdevs=sigma, target=0, abs=False)
    monkeypatch.undo()
    ours = ga.SmoothGrad(ga.Saliency(abs=False), samples=samples, sigma=sigma, kind=kind, seed=seed)(model, x, 0)
    assert_close_rel(ours, theirs)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("ours_cls,theirs_cls", [(ga.GuidedBackprop, GuidedBackprop), (ga.Deconvnet, Deconvolution)])
def test_modified_backprop(name, ours_cls, theirs_cls):
    model, x, _ = case(name)
    ours = ours_cls()(model, x, 1)
    theirs = theirs_cls(captum_model(name, model)).attribute(x, target=1)
    assert_close_rel(ours, theirs)


@pytest.mark.parametrize("name", ["cnn", "resnet"])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_gradcam(name, mode):
    model, x, layer = case(name)
    module = dict(model.named_modules())[layer]
    raw = LayerGradCam(model, module).attribute(x, target=2, relu_attributions=True)
    assert_close_rel(ga.GradCAM(layer, upsample=False)(model, x, 2), raw.squeeze(1))
    up = LayerAttribution.interpolate(raw, x.shape[2:], interpolate_mode=mode)
    assert_close_rel(ga.GradCAM(layer, interpolation=mode)(model, x, 2), up.squeeze(1))


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_guided_gradcam(name):
    model, x, layer = case(name)
    reference = captum_model(name, model)
    theirs = GuidedGradCam(reference, dict(reference.named_modules())[layer]).attribute(x, target=0)
    assert_close_rel(ga.GuidedGradCAM(layer, interpolation="nearest")(model, x, 0), theirs)
