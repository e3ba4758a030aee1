"""DeepLIFT (Rescale), DeepLiftShap and GradientSHAP: summation-to-delta, Captum as oracle, in-place
activations, seeded draws, bad inputs, the model left as found."""

import pytest
import torch
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import DeepLiftShap as CaptumDeepLiftShap
from captum.attr import GradientShap as CaptumGradientShap
from captum.attr._core import deep_lift as captum_deep_lift
from helpers import assert_close_rel, assert_unchanged, snapshot
from nets import double, resnet_like, small_cnn, twin
from torch import nn

import gradaudit as ga


class Copy(nn.Module):
    """x * 1.0: the same function, but a new tensor."""

    def forward(self, x):
        return x * 1.0


def separated(model: nn.Sequential) -> nn.Sequential:
    """The same network with ``Copy`` between two directly adjacent nonlinear modules. Captum's DeepLift
    hooks the tensor two such modules share and one of them reads the other's unmodified gradient: on
    ``small_cnn`` (ReLU then MaxPool) its own summation-to-delta gap is 0.08-0.19; separated, it is 1e-16."""
    layers = list(model)
    out = []
    for layer, following in zip(layers, layers[1:] + [None], strict=True):
        out.append(layer)
        if following is not None and all(type(m) in captum_deep_lift.SUPPORTED_NON_LINEAR for m in (layer, following)):
            out.append(Copy())
    return nn.Sequential(*out).eval()


class Residual(nn.Module):
    """Conv-BN-ReLU, a residual block with its own ReLU modules (Captum needs each used once), pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU())
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(5, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(5, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))

    def forward(self, x):
        x = self.stem(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.head(self.relu2(out + x))


def residual():
    torch.manual_seed(3)
    net = Residual()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return double(net.eval())


def squashing_mlp():
    torch.manual_seed(4)
    return double(nn.Sequential(nn.Linear(10, 12), nn.ELU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 8),
                                nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 6), nn.Softplus(),
                                nn.Linear(6, 3)).eval())


CASES = {
    "cnn": (lambda: double(small_cnn()), (5, 1, 8, 8)),
    "residual": (residual, (4, 3, 6, 6)),
    "squashing": (squashing_mlp, (6, 10)),
}


def inputs(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("name", ["cnn", "residual"])
def test_summation_to_delta_is_exact_on_relu_networks(name):
    model, shape = CASES[name]
    model = model()
    x, reference = inputs(shape), inputs(shape, 1)
    attr, gap = ga.DeepLift(baseline=reference).with_delta(model, x, target=1)
    assert gap.abs().max() < 1e-10
    exact = model(x)[:, 1] - model(reference)[:, 1]
    assert torch.allclose(attr.flatten(1).sum(1), exact, atol=1e-10)


def test_summation_to_delta_with_in_place_relus_and_a_reused_relu_module():
    model = double(resnet_like(inplace=True))               # one ReLU module used twice per block, in place
    x = inputs((3, 3, 8, 8))
    _, gap = ga.DeepLift().with_delta(model, x, target=0)
    assert gap.abs().max() < 1e-10
    assert_close_rel(ga.DeepLift()(model, x, 0), ga.DeepLift()(double(twin(model)), x, 0), 1e-12)


@pytest.mark.parametrize("name", CASES)
def test_equals_captum_deeplift(name):
    model, shape = CASES[name]
    model = model()
    x, reference = inputs(shape), inputs(shape, 1) * 0.5
    ours = ga.DeepLift(baseline=reference)(model, x, target=2)
    oracle = separated(model) if isinstance(model, nn.Sequential) else model
    theirs = CaptumDeepLift(oracle).attribute(x, baselines=reference, target=2)
    assert_close_rel(ours, theirs, 1e-5)


def test_softmax_rule_equals_captum_for_one_example():
    """Captum subtracts the mean over the whole batch; ours per row (batch-independent): equal for one row."""
    torch.manual_seed(5)
    model = double(nn.Sequential(nn.Linear(10, 8), nn.Softmax(dim=1), nn.Linear(8, 3)).eval())
    x, reference = inputs((1, 10)), inputs((1, 10), 1)
    theirs = CaptumDeepLift(model).attribute(x, baselines=reference, target=0)
    assert_close_rel(ga.DeepLift(baseline=reference)(model, x, 0), theirs, 1e-5)
    batch = inputs((4, 10))
    alone = torch.cat([ga.DeepLift(baseline=reference)(model, batch[i:i + 1], 0) for i in range(4)])
    assert_close_rel(ga.DeepLift(baseline=reference)(model, batch, 0, batch_size=2), alone, 1e-12)


def test_deeplift_shap_equals_captum():
    model = double(small_cnn())
    x, references = inputs((3, 1, 8, 8)), inputs((4, 1, 8, 8), 2) * 0.5
    ours = ga.DeepLiftShap(baselines=references)(model, x, target=1)
    theirs = CaptumDeepLiftShap(separated(model)).attribute(x, baselines=references, target=1)
    assert_close_rel(ours, theirs, 1e-5)
    mean = sum(ga.DeepLift(baseline=references[m])(model, x, 1) for m in range(4)) / 4
    assert_close_rel(ours, mean, 1e-12)


def test_gradient_shap_on_a_linear_model():
    torch.manual_seed(6)
    model = double(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval())
    weight = model[1].weight[1].view(1, 3, 4)
    x, references = inputs((5, 3, 4)), inputs((7, 3, 4), 3)
    single = ga.GradientShap(baselines=references[:1], samples=3)(model, x, 1)
    assert_close_rel(single, weight * (x - references[:1]), 1e-12)                 # every draw is exact
    expected = weight * (x - references.mean(0))
    ours = ga.GradientShap(baselines=references, samples=4000)(model, x, 1)
    torch.manual_seed(0)
    theirs = CaptumGradientShap(model).attribute(x, baselines=references, n_samples=4000, target=1)
    for estimate in (ours, theirs):                                                  # both unbiased for it
        assert (estimate - expected).abs().max() < 0.05 * expected.abs().max()
    noisy = ga.GradientShap(baselines=references, samples=4000, sigma=0.2)(model, x, 1)
    assert (noisy - expected).abs().max() < 0.08 * expected.abs().max()             # zero-mean noise


def test_gradient_shap_draws_do_not_depend_on_chunking():
    model = double(small_cnn())
    x, references = inputs((4, 1, 8, 8)), inputs((3, 1, 8, 8), 2)
    method = ga.GradientShap(baselines=references, samples=6, sigma=0.1, seed=3)
    assert_close_rel(method(model, x, 0, batch_size=5), method(model, x, 0, batch_size=24), 1e-12)
    assert not torch.allclose(method(model, x, 0), ga.GradientShap(baselines=references, samples=6, sigma=0.1,
                                                                   seed=4)(model, x, 0))


def test_bad_baselines_and_the_model_left_as_found():
    model = double(small_cnn())
    x = inputs((2, 1, 8, 8))
    before = snapshot(model)
    with pytest.raises(ValueError, match="baseline has shape \\[3\\], which does not broadcast"):
        ga.DeepLift(baseline=torch.zeros(3))(model, x)
    with pytest.raises(ValueError, match="baselines has per-example shape \\[1, 4, 4\\]; the inputs have"):
        ga.DeepLiftShap(baselines=torch.zeros(2, 1, 4, 4))(model, x)
    with pytest.raises(ValueError, match="baselines has per-example shape"):
        ga.GradientShap(baselines=torch.zeros(2, 5))(model, x)
    with pytest.raises(TypeError, match="baselines must be a tensor"):
        ga.GradientShap()
    ga.DeepLift()(model, x)
    ga.DeepLiftShap(baselines=x)(model, x)
    assert_unchanged(model, before)
