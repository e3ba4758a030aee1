"""Models of several inputs and extra forward arguments: every method takes a tuple of inputs and
returns the same structure, forward_args pass through (per-example tensors follow the chunked
rows), baselines per input; Captum (additional_forward_args) as the oracle; bad inputs."""

import pytest
import torch
from captum.attr import DeepLift, InputXGradient, IntegratedGradients, LayerGradCam, Saliency
from helpers import assert_close_rel, assert_unchanged, snapshot
from torch import nn

import gradaudit as ga


class ImageAndMetadata(nn.Module):
    """An image [B, 1, 6, 6] and metadata [B, 4]; ``scale`` [B] multiplies the logits (not attributed)."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.meta, self.relu2 = nn.Linear(4, 5), nn.ReLU()
        self.head = nn.Linear(3 * 3 * 3 + 5, 3)

    def forward(self, image, metadata, scale):
        a = self.pool(self.relu(self.conv(image))).flatten(1)
        return self.head(torch.cat([a, self.relu2(self.meta(metadata))], 1)) * scale[:, None]


@pytest.fixture
def case():
    torch.manual_seed(0)
    model = ImageAndMetadata().double().eval()
    generator = torch.Generator().manual_seed(1)
    inputs = (torch.randn(5, 1, 6, 6, generator=generator, dtype=torch.float64),
              torch.randn(5, 4, generator=generator, dtype=torch.float64))
    scale = torch.rand(5, generator=generator, dtype=torch.float64) + 0.5
    return model, inputs, scale


def _equal(ours, theirs):
    assert isinstance(ours, tuple) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert_close_rel(a, b, 1e-5)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_gradient_methods_equal_captum_on_two_inputs(case, batch_size):
    model, inputs, scale = case
    target = torch.tensor([0, 1, 2, 1, 0])
    run = {"forward_args": (scale,), "batch_size": batch_size}
    _equal(ga.Saliency(abs=False)(model, inputs, target, **run),
           Saliency(model).attribute(inputs, target=target, additional_forward_args=(scale,), abs=False))
    _equal(ga.InputXGradient()(model, inputs, target, **run),
           InputXGradient(model).attribute(inputs, target=target, additional_forward_args=(scale,)))
    baselines = (0.1, torch.full((1, 4), -0.2, dtype=torch.float64))               # one per input
    _equal(ga.IntegratedGradients(steps=16, baseline=baselines)(model, inputs, target, **run),
           IntegratedGradients(model).attribute(inputs, baselines=(0.1, baselines[1].expand(5, 4)), target=target,
                                                additional_forward_args=(scale,), n_steps=16))
    _equal(ga.DeepLift(baseline=baselines)(model, inputs, target, **run),
           DeepLift(model).attribute(inputs, baselines=(torch.full_like(inputs[0], 0.1), baselines[1].expand(5, 4)),
                                     target=target, additional_forward_args=(scale,)))


def test_layer_methods_smoothgrad_and_deltas_on_two_inputs(case):
    model, inputs, scale = case
    cam = ga.GradCAM("conv")(model, inputs, 1, forward_args=(scale,))
    theirs = LayerGradCam(model, model.conv).attribute(inputs, target=1, additional_forward_args=(scale,),
                                                       relu_attributions=True)
    assert_close_rel(cam, theirs[:, 0], 1e-5)                                    # layer resolution
    smooth = ga.SmoothGrad(ga.Saliency(abs=False), samples=4, sigma=0.0)(model, inputs, 1, forward_args=(scale,))
    _equal(smooth, ga.Saliency(abs=False)(model, inputs, 1, forward_args=(scale,)))
    attributions, gap = ga.DeepLift().with_delta(model, inputs, 2, forward_args=(scale,))
    assert gap.abs().max() < 1e-10 and attributions[1].shape == (5, 4)
    shap = ga.GradientShap(baselines=(torch.zeros(3, 1, 6, 6, dtype=torch.float64),
                                      torch.zeros(3, 4, dtype=torch.float64)), samples=3)
    assert [a.shape for a in shap(model, inputs, 2, forward_args=(scale,))] == [(5, 1, 6, 6), (5, 4)]


def test_forward_args_with_a_single_input_follow_the_rows():
    torch.manual_seed(0)
    model = nn.Linear(4, 2).double().eval()

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x, mask):
            return self.inner(x * mask)

    x = torch.randn(6, 4, dtype=torch.float64)
    mask = (torch.arange(24).view(6, 4) % 3 != 0).double()
    ours = ga.IntegratedGradients(steps=4)(Masked().eval(), x, 1, forward_args=(mask,), batch_size=5)
    assert_close_rel(ours, x * mask * model.weight[1].detach(), 1e-10)          # IG of a linear map


def test_bad_inputs_and_the_model_left_as_found(case):
    model, inputs, scale = case
    before = snapshot(model)
    with pytest.raises(ValueError, match="baseline must be a tuple of 2 baselines, one per input; got 3"):
        ga.IntegratedGradients(baseline=(0, 0, 0))(model, inputs, forward_args=(scale,))
    with pytest.raises(ValueError, match="each baseline must broadcast"):
        ga.DeepLift(baseline=(torch.zeros(3), 0))(model, inputs, forward_args=(scale,))
    with pytest.raises(ValueError, match=r"baselines\[1\] must have per-example shape \[4\]"):
        ga.DeepLiftShap(baselines=(torch.zeros(2, 1, 6, 6), torch.zeros(2, 5)))(model, inputs, forward_args=(scale,))
    with pytest.raises(TypeError, match="forward_args must be a tuple of extra arguments.*forward_args=\\(mask,\\)"):
        ga.Saliency()(model, inputs, forward_args=scale)
    with pytest.raises(ValueError, match="same batch size; got \\[5, 4\\]"):
        ga.Saliency()(model, (inputs[0], inputs[1][:4]), forward_args=(scale,))
    with pytest.raises(TypeError, match="share one floating-point dtype.*forward_args"):
        ga.Saliency()(model, (inputs[0], inputs[1].long()), forward_args=(scale,))
    with pytest.raises(ValueError, match="Occlusion slides windows over one input.*LIME, KernelSHAP"):
        ga.Occlusion()(model, inputs, forward_args=(scale,))
    ga.IntegratedGradients(steps=3)(model, inputs, forward_args=(scale,))
    shapes = [a.shape for a in ga.KernelSHAP(samples=64)(model, inputs, 0, forward_args=(scale,))]
    assert shapes == [(5, 1, 6, 6), (5, 4)]                                      # perturbation methods too
    assert_unchanged(model, before)
