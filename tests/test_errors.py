"""Bad input: each gets a clear error that names the argument and what was expected."""

import pytest
import torch
from nets import resnet_like, small_cnn
from torch import nn

import gradaudit as ga


@pytest.fixture
def cnn():
    return small_cnn()


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(2, 1, 8, 8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs(cnn, x, bad):
    x[0, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="inputs contains 1 NaN or infinite"):
        ga.Saliency()(cnn, x)


class Root(nn.Module):
    """sqrt of each input, summed into 2 classes: the gradient is infinite where an input is 0, and the
    output NaN where one is negative."""

    def forward(self, x):
        root = x.flatten(1).sqrt()
        return torch.stack([root.sum(1), -root.sum(1)], 1)


def test_a_non_finite_attribution_is_refused_naming_the_method_and_the_first_bad_example():
    x = torch.rand(4, 1, 3, 3) + 0.5
    x[2, 0, 1, 1] = x[3, 0, 0, 0] = 0.0                    # an infinite gradient in examples 2 and 3
    for method in (ga.Saliency(), ga.InputXGradient(), ga.IntegratedGradients(steps=4)):
        with pytest.raises(ValueError, match=rf"{type(method).__name__}\(.*\) gave a non-finite attribution: "
                                             r"example 2 \(of 4\) holds 1 NaN or infinite"):
            method(Root().eval(), x, 0)
    x[1, 0, 2, 2] = -1.0                                  # example 1's output is NaN: so are its occlusion differences
    with pytest.raises(ValueError, match=r"Occlusion\(.*\) gave a non-finite attribution: example 1 \(of 4\)"):
        ga.Occlusion(window=1, stride=1)(Root().eval(), x, 0)
    assert torch.isfinite(ga.Occlusion(window=1, stride=1)(Root().eval(), x[2:], 0)).all()


def test_target_out_of_range(cnn, x):
    with pytest.raises(ValueError, match="target class 3 is out of range for a model with 3 outputs"):
        ga.IntegratedGradients(steps=2)(cnn, x, target=3)
    with pytest.raises(ValueError, match="out of range"):
        ga.Saliency()(cnn, x, target=torch.tensor([0, -1]))


def test_target_of_wrong_shape_or_type(cnn, x):
    with pytest.raises(ValueError, match=r"target has shape \[3\]; expected an int or shape \[2\]"):
        ga.Saliency()(cnn, x, target=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        ga.Saliency()(cnn, x, target=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"target callable returned \[2, 3\]; expected .* shape \[2\]"):
        ga.Saliency()(cnn, x, target=lambda out: out)


def test_integer_inputs_point_at_the_embedding_layer(cnn):
    with pytest.raises(TypeError, match="floating-point inputs; .*embedding layer"):
        ga.Saliency()(cnn, torch.zeros(2, 1, 8, 8, dtype=torch.long))


def test_unknown_layer_suggests_close_names():
    with pytest.raises(ValueError,
                       match=r"layer 'layer2.conv' is not a module of the model; close matches: .*layer2.conv1"):
        ga.GradCAM("layer2.conv")(resnet_like(), torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="layer must be a dotted module name"):
        ga.GradCAM(3)(resnet_like(), torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="not part of the model"):
        ga.GradCAM(nn.Conv2d(1, 1, 1))(resnet_like(), torch.randn(1, 3, 8, 8))


def test_layer_never_reached_in_forward():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)
            self.head = nn.Linear(2, 3)

        def forward(self, x):
            return self.head(self.used(x).mean((2, 3)))

    with pytest.raises(ValueError, match="layer 'unused' was never called during the model's forward"):
        ga.GradCAM("unused")(Skips().eval(), torch.randn(2, 1, 6, 6))


def test_layer_with_wrong_output_shape():
    with pytest.raises(ValueError, match=r"layer '5' outputs shape \[2, 96\]; layer methods need"):
        ga.GradCAM("5")(small_cnn(), torch.randn(2, 1, 8, 8))


def test_output_not_batch_by_classes_without_callable_target(x):
    model = nn.Sequential(nn.Conv2d(1, 2, 3)).eval()
    with pytest.raises(ValueError, match=r"model output is \[2, 2, 6, 6\].*pass a callable target"):
        ga.Saliency()(model, x)
    assert ga.Saliency()(model, x, target=lambda out: out.sum((1, 2, 3))).shape == x.shape


def test_model_forward_failure_names_the_input_shape(cnn):
    with pytest.raises(ValueError,
                       match=r"model\(inputs\) failed for inputs with per-example shape \[3, 8, 8\]: .*channels"):
        ga.Saliency()(cnn, torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batch_size_must_be_a_positive_int(cnn, x, bad):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        ga.Saliency()(cnn, x, batch_size=bad)


def test_settings_are_checked_at_construction():
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        ga.IntegratedGradients(steps=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        ga.IntegratedGradients(steps=1, rule="riemann_trapezoid")
    with pytest.raises(ValueError, match="rule must be one of"):
        ga.IntegratedGradients(rule="simpson")
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        ga.SmoothGrad(samples=0)
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        ga.SmoothGrad(noise=-0.1)
    with pytest.raises(ValueError, match="kind must be one of"):
        ga.SmoothGrad(kind="median")
    with pytest.raises(TypeError, match="method must be a gradaudit method"):
        ga.SmoothGrad(method=lambda m, x: x)
    with pytest.raises(ValueError, match="virtual must be one of"):
        ga.LayerSaliency("a", virtual="conv5x5")
    with pytest.raises(ValueError, match="aggregate must be one of"):
        ga.LayerSaliency("a", aggregate="mean")
    with pytest.raises(TypeError, match="GradCAM needs a layer"):
        ga.GradCAM()
    with pytest.raises(ValueError, match="non-empty list of layer methods"):
        ga.Combine([ga.Saliency()])


def test_wrong_argument_types(cnn, x):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ga.Saliency()(lambda t: t, x)
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
        ga.Saliency()(cnn, x.numpy())
    with pytest.raises(ValueError, match="non-empty batch axis"):
        ga.Saliency()(cnn, torch.randn(8))
    with pytest.raises(ValueError, match="baseline has shape \\[3\\], which does not broadcast"):
        ga.IntegratedGradients(baseline=torch.zeros(3))(cnn, x)
    with pytest.raises(ValueError, match="reduce must be one of"):
        ga.heatmap(x, reduce="mean")
