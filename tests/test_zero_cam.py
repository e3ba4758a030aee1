"""A Grad-CAM map that is zero everywhere: the CAM family's ``relu=False`` shows the signed map, and every
place that shows maps (method_grid's figure and PNG, the HTML report, ``gradaudit explain``) says why."""

from collections import OrderedDict
from dataclasses import replace

import pytest
import torch
from helpers import assert_close_rel
from nets import small_cnn
from PIL import Image
from torch import nn

import gradaudit as ga
from gradaudit.jobs.explain import explain_input
from gradaudit.jobs.registry import MethodSettings
from gradaudit.report.figures import NOTES_KEY, grid_figure, method_grid
from gradaudit.report.html import write_report
from gradaudit.store import Store

SIZE = 6


def negative_cam_net() -> nn.Sequential:
    """[B, 1, 6, 6] -> [B, 2] whose Grad-CAM at ``conv2`` for class 0 is exactly zero.

    conv2's two channels share non-negative weights; biases 1 and 0 make a_0 >= 1 and a_1 = a_0 - 1
    everywhere. Through global average pooling, logit 0 = (-a_0 + 0.5 a_1) averaged over the grid, so
    the Grad-CAM weights are w_0 = -1 / 36 and w_1 <= 0.5 / 36, and every weighted sum
    w_0 a_0 + w_1 a_1 <= (-a_0 + 0.5 (a_0 - 1)) / 36 < 0.
    """
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 3, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(3, 2, 3, padding=1)), ("relu2", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(2, 2)),
    ]))
    with torch.no_grad():
        net.conv2.weight.copy_(torch.rand(1, 3, 3, 3).expand(2, -1, -1, -1) * 0.2)
        net.conv2.bias.copy_(torch.tensor([1.0, 0.0]))
        net.fc.weight.copy_(torch.tensor([[-1.0, 0.5], [1.0, 0.0]]))
        net.fc.bias.zero_()
    return net.eval()


@pytest.fixture
def x():
    return torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def by_hand(net: nn.Sequential, x: torch.Tensor, target: int) -> torch.Tensor:
    """Grad-CAM before its ReLU, independently: weights = spatial mean of d logit / d a at conv2, then the
    sum over channels of weight * activation. [B, H, W]."""
    a = net.conv2(net.relu1(net.conv1(x)))
    logits = net.fc(net.flatten(net.pool(net.relu2(a))))
    g = torch.autograd.grad(logits[:, target].sum(), a)[0]
    return (g.mean((2, 3), keepdim=True) * a).sum(1).detach()


def test_gradcam_is_all_zero_and_the_pre_relu_map_is_the_negative_weighted_sum(x):
    net = negative_cam_net()
    cam = ga.GradCAM("conv2")(net, x, 0)
    assert torch.equal(cam, torch.zeros(2, SIZE, SIZE))
    signed = ga.GradCAM("conv2", relu=False)(net, x, 0)
    expected = by_hand(net, x, 0)
    assert_close_rel(signed, expected, rel=1e-6)
    assert (signed < 0).all()                                       # every weighted sum is negative
    assert (expected <= -1 / 36 + 1e-7).all()                      # (-a_0 + 0.5 (a_0 - 1)) / 36 with a_0 >= 1


@pytest.mark.parametrize("method", [ga.GradCAM("3", upsample=False), ga.GradCAMPlusPlus("3", upsample=False),
                                    ga.SmoothGradCAMPlusPlus("3", samples=3, upsample=False), ga.GuidedGradCAM("3")])
def test_the_default_is_the_relu_of_the_signed_map(method):
    net = small_cnn().eval()
    inputs = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    default, signed = method(net, inputs, 1), replace(method, relu=False)(net, inputs, 1)
    assert method.relu is True
    if isinstance(method, ga.GuidedGradCAM):                        # guided backprop x the (signed) Grad-CAM map
        guided = ga.GuidedBackprop()(net, inputs, 1)
        assert torch.equal(default, guided * ga.GradCAM("3")(net, inputs, 1).unsqueeze(1))
        assert torch.equal(signed, guided * ga.GradCAM("3", relu=False)(net, inputs, 1).unsqueeze(1))
    else:                                                           # at the layer's resolution, before upsampling
        assert torch.equal(default, signed.clamp(min=0)) and (signed < 0).any()


def test_method_grid_notes_an_all_zero_cam_panel(x, tmp_path):
    net = negative_cam_net()
    methods = {"GradCAM": ga.GradCAM("conv2"), "signed": ga.GradCAM("conv2", relu=False)}
    maps = {name: m(net, x, 0) for name, m in methods.items()}
    figure = grid_figure(x, maps, methods=methods)
    texts = [" ".join(t.get_text().split()) for axis in figure.axes for t in axis.texts]
    note = "all zero: every weighted sum <= 0; try relu=False or another layer"
    assert texts == [note, note]                                    # the two GradCAM panels, not the signed ones
    path = method_grid(x, maps, tmp_path / "run" / "figures" / "net.png", methods=methods)
    with Image.open(path) as image:
        assert image.text[NOTES_KEY].splitlines() == [f"GradCAM, example {i}: {note}" for i in (0, 1)]
    plain = method_grid(x, {"GradCAM": maps["GradCAM"]}, tmp_path / "plain.png")       # no methods: no reason
    with Image.open(plain) as image:
        assert image.text[NOTES_KEY].splitlines() == ["GradCAM, example 0: all zero", "GradCAM, example 1: all zero"]
    Store(tmp_path / "run" / "results.sqlite").close()
    page = write_report(tmp_path / "run").read_text(encoding="utf-8")
    assert "GradCAM, example 1: all zero: every weighted sum &lt;= 0; try relu=False or another layer" in page


def test_explain_prints_a_line_per_all_zero_map(x, tmp_path, capsys):
    source = tmp_path / "x.pt"
    torch.save(x, source)
    explain_input("test_zero_cam:negative_cam_net", None, False, str(source), ["gradcam", "saliency"],
                  MethodSettings(layer="conv2"), tmp_path / "map.png", target=0)
    lines = [line for line in capsys.readouterr().out.splitlines() if "all zero" in line]
    assert lines == [f"gradcam: the map of example {i} is all zero: every weighted sum at layer conv2 is <= 0, so the "
                     "final ReLU leaves nothing; try another --layer, or relu=False in the Python API to see the "
                     "signed map" for i in (0, 1)]
