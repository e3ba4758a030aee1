"""LRP for CNNs and MLPs (``ga.LRP``) against zennit 0.5.1, analytic cases, the model left as found, refusals.

zennit is installed --no-deps and its ``__init__`` imports ``zennit.torchvision``, which imports torchvision (not
installable beside our torch): the tests load its submodules (core, rules, composites, canonizers, attribution,
layer, types; none imports torchvision) under a bare ``zennit`` package put in ``sys.modules`` for the module's
tests and removed afterwards. zennit's relevance here is ``Gradient(model, composite)`` with the output gradient
one-hot * output, so it starts at the target's logit as ours.

zennit's BatchNorm canonizer folds the statistics into the layer and leaves the BatchNorm computing
x / sqrt(1 + eps), not the identity, so zennit's forward is off by that factor per folded BatchNorm
(``test_zennit_canonizer_leaves_batchnorm_scaling``): the comparisons give their BatchNorms eps = 0.
"""

import copy
import importlib.util
import sys
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_unchanged, snapshot
from nets import double, resnet_like
from nets import twin as out_of_place
from torch import nn

import gradaudit as ga
from gradaudit.jobs.registry import METHODS, MethodSettings
from gradaudit.methods.lrp import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

COMPOSITES = ["EpsilonPlus", "EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonAlpha2Beta1Flat", "EpsilonGammaBox"]
BOX = {"low": -3.0, "high": 3.0}


@pytest.fixture(scope="module")
def zennit():
    """zennit's submodules as a namespace (z.composites, z.rules, ...), without its torchvision import."""
    spec = importlib.util.find_spec("zennit")
    assert spec is not None, "zennit 0.5.1 is a test dependency (make install)"
    saved = {k: v for k, v in sys.modules.items() if k == "zennit" or k.startswith("zennit.")}
    package = types.ModuleType("zennit")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["zennit"] = package
    try:
        from zennit import attribution, canonizers, composites, core, layer, rules
        yield types.SimpleNamespace(attribution=attribution, canonizers=canonizers, composites=composites, core=core,
                                    layer=layer, rules=rules)
    finally:
        for key in [k for k in sys.modules if k == "zennit" or k.startswith("zennit.")]:
            del sys.modules[key]
        sys.modules.update(saved)


def zennit_relevance(z, model, x, target, composite):
    """zennit's input relevance with the output gradient one-hot * output."""
    with z.attribution.Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, lambda out: F.one_hot(target, out.shape[1]).to(out) * out)
    return relevance


def zennit_composite(z, name, **settings):
    return getattr(z.composites, name)(canonizers=[z.canonizers.SequentialMergeBatchNorm()],
                                       **(BOX if name == "EpsilonGammaBox" else {}), **settings)


def randomised(model, seed=0, eps=0.0):
    """``model`` in float64 eval mode with random BatchNorm statistics and affine parameters (eps as given)."""
    g = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64))
            m.eps = eps
    return model


def cnn(eps=0.0):
    return randomised(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1),
        nn.BatchNorm2d(5), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(20, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)), eps=eps)


class Residual(nn.Module):
    """A ResNet BasicBlock (in-place ReLU, ``out += identity``, a 1x1 convolution + BatchNorm shortcut) and a
    linear head; ``zennit_sum=True`` adds the branches with zennit's ``Sum`` layer, as its ResNet canonizer does."""

    def __init__(self, zennit_sum=None, bias=True):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(6)
        self.downsample = nn.Sequential(nn.Conv2d(4, 6, 1, stride=2, bias=bias), nn.BatchNorm2d(6))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3, bias=bias)
        self.sum = zennit_sum

    def forward(self, x):
        x = self.relu(self.stem(x))
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.sum is None:
            out += identity
        else:
            out = self.sum(torch.stack([identity, out], dim=-1))
        return self.fc(self.pool(self.relu(out)).flatten(1))


def residual(zennit_sum=None, bias=True):
    torch.manual_seed(1)
    return randomised(Residual(zennit_sum, bias), seed=1)


def with_zennit_sum(model, zennit_sum):
    """The same residual network adding its branches with zennit's Sum layer."""
    copy = Residual(zennit_sum, bias=model.fc.bias is not None).double().eval()
    copy.load_state_dict(model.state_dict())
    modules = dict(copy.named_modules())
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            modules[name].eps = m.eps
    return copy


def inputs(shape=(3, 3, 8, 8), seed=2):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


TARGET = torch.tensor([0, 2, 1])


@pytest.mark.parametrize("name", COMPOSITES)
def test_composites_equal_zennit_on_a_cnn_with_batchnorm(zennit, name):
    model, x = cnn(), inputs()
    before = snapshot(model)
    ours = ga.LRP(name, **(BOX if name == "EpsilonGammaBox" else {}))(model, x, TARGET)
    assert_unchanged(model, before)
    expected = zennit_relevance(zennit, model, x, TARGET, zennit_composite(zennit, name))
    assert ours.shape == x.shape and expected.abs().max() > 1e-5
    assert torch.allclose(ours, expected, rtol=0, atol=1e-6 * expected.abs().max().item())


@pytest.mark.parametrize("name", COMPOSITES)
def test_composites_equal_zennit_on_a_residual_block(zennit, name):
    model, x = residual(), inputs()
    before = snapshot(model)
    ours = ga.LRP(name, **(BOX if name == "EpsilonGammaBox" else {}))(model, x, TARGET)
    assert_unchanged(model, before)
    summed = with_zennit_sum(model, zennit.layer.Sum())
    expected = zennit_relevance(zennit, summed, x, TARGET, zennit_composite(zennit, name))
    assert expected.abs().max() > 1e-5
    assert torch.allclose(ours, expected, rtol=0, atol=1e-6 * expected.abs().max().item())


def test_zennit_on_a_plain_addition_hands_both_branches_the_whole_relevance(zennit):
    """Without its ResNet canonizer zennit takes the gradient of ``out += identity``: each branch gets all of the
    relevance, so the input's relevance exceeds the logit. Ours splits it in proportion (zennit's Sum rule): with
    no biases and the epsilon rule (epsilon 1e-9) everywhere, relevance is conserved (up to 1e-4: the 1e-6
    stabilisers of the addition and the average pool, zennit's)."""
    model, x = residual(bias=False), inputs()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.zero_()
            m.running_mean.zero_()
    logits = model(x)[torch.arange(3), TARGET].detach()
    ours = ga.LRP(rules={nn.Conv2d: Epsilon(1e-9), nn.Linear: Epsilon(1e-9)})(model, x, TARGET).sum((1, 2, 3))
    assert torch.allclose(ours, logits, rtol=1e-4)
    epsilon = [(nn.Conv2d, zennit.rules.Epsilon(1e-9)), (nn.Linear, zennit.rules.Epsilon(1e-9))]
    composite = zennit.composites.EpsilonPlus(layer_map=epsilon, canonizers=[
        zennit.canonizers.SequentialMergeBatchNorm()])
    plain = zennit_relevance(zennit, model, x, TARGET, composite).sum((1, 2, 3))
    assert ((plain - logits).abs() > 0.05 * logits.abs()).all()


def test_zennit_canonizer_leaves_batchnorm_scaling(zennit):
    """zennit's merged BatchNorm computes x / sqrt(1 + eps): its forward is not the model's. A BatchNorm with eps
    and running variance v is the one with eps = 0 and variance v + eps; ours gives both the same relevance,
    zennit's, where eps = 0, and zennit's own differs where eps > 0."""
    model, x = cnn(eps=1e-3), inputs()
    shifted = copy.deepcopy(model)
    for m in shifted.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_var += m.eps
            m.eps = 0.0
    assert torch.allclose(model(x), shifted(x), rtol=1e-12)
    with zennit.attribution.Gradient(model=model, composite=zennit_composite(zennit, "EpsilonPlus")) as attributor:
        out, theirs = attributor(x, lambda out: F.one_hot(TARGET, 3).to(out) * out)
    assert not torch.allclose(out, model(x), rtol=1e-5, atol=0)
    exact = zennit_relevance(zennit, shifted, x, TARGET, zennit_composite(zennit, "EpsilonPlus"))
    ours = ga.LRP()(model, x, TARGET)
    scale = exact.abs().max().item()
    assert torch.allclose(ours, exact, rtol=0, atol=1e-9 * scale)
    assert not torch.allclose(theirs, exact, rtol=0, atol=1e-6 * scale)


def mlp(bias=True, seed=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8, bias=bias), nn.ReLU(), nn.Linear(8, 6, bias=bias), nn.ReLU(),
                         nn.Linear(6, 3, bias=bias)).double().eval()


SINGLE_RULES = [
    ("epsilon", lambda z: z.rules.Epsilon(epsilon=0.1), Epsilon(0.1)),
    ("zplus", lambda z: z.rules.ZPlus(), ZPlus()),
    ("alpha2beta1", lambda z: z.rules.AlphaBeta(alpha=2, beta=1), AlphaBeta(2, 1)),
    ("alpha1beta0", lambda z: z.rules.AlphaBeta(alpha=1, beta=0), AlphaBeta(1, 0)),
    ("gamma", lambda z: z.rules.Gamma(gamma=0.5), Gamma(0.5)),
    ("flat", lambda z: z.rules.Flat(), Flat()),
    ("wsquare", lambda z: z.rules.WSquare(), WSquare()),       # no biases below: zennit adds b^2 (next test)
]


@pytest.mark.parametrize("name, theirs, ours", SINGLE_RULES, ids=[r[0] for r in SINGLE_RULES])
def test_each_rule_equals_zennit_on_an_mlp(zennit, name, theirs, ours):
    model, x = mlp(bias=name != "wsquare"), inputs((3, 12))
    composite = zennit.composites.LayerMapComposite([(nn.ReLU, zennit.rules.Pass()), (nn.Linear, theirs(zennit))])
    expected = zennit_relevance(zennit, model, x, TARGET, composite)
    got = ga.LRP(rules={nn.Linear: ours})(model, x, TARGET)
    assert expected.abs().max() > 1e-5
    assert torch.allclose(got, expected, rtol=0, atol=1e-6 * expected.abs().max().item())


def test_box_rule_on_the_first_layer_equals_zennit(zennit):
    model = mlp()
    x = inputs((3, 12)).clamp(-1, 2)
    low, high = torch.full((1, 12), -1.0, dtype=torch.float64), torch.full((1, 12), 2.0, dtype=torch.float64)
    composite = zennit.composites.NameLayerMapComposite(
        name_map=[(("1",), zennit.rules.ZBox(low, high))],
        layer_map=[(nn.ReLU, zennit.rules.Pass()), (nn.Linear, zennit.rules.Epsilon())])
    expected = zennit_relevance(zennit, model, x, TARGET, composite)
    got = ga.LRP(rules={"1": ZBox(low, high), nn.Linear: "epsilon"})(model, x, TARGET)
    same_by_name = ga.LRP(rules={"1": "zbox", nn.Linear: "epsilon"}, low=low, high=high)(model, x, TARGET)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6 * expected.abs().max().item())
    assert torch.equal(same_by_name, got)


def test_names_override_types_override_the_composite_as_zennit(zennit):
    model, x = cnn(), inputs()
    composite = zennit.composites.MixedComposite([
        zennit.composites.NameMapComposite([(("13",), zennit.rules.Gamma(gamma=0.5))]),
        zennit.composites.EpsilonPlus(layer_map=[(nn.Conv2d, zennit.rules.AlphaBeta(alpha=1, beta=0))])],
        canonizers=[zennit.canonizers.SequentialMergeBatchNorm()])
    expected = zennit_relevance(zennit, model, x, TARGET, composite)
    got = ga.LRP(rules={"13": Gamma(0.5), nn.Conv2d: "alpha1beta0"})(model, x, TARGET)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6 * expected.abs().max().item())
    assert not torch.allclose(got, ga.LRP()(model, x, TARGET), rtol=1e-3)


def test_zennit_wsquare_adds_the_squared_bias(zennit):
    """The w^2 rule (Montavon et al. 2017) conserves a layer's relevance; zennit's also squares the bias into the
    denominator, so with a bias part of the relevance vanishes."""
    torch.manual_seed(4)
    model, x = nn.Sequential(nn.Linear(5, 3)).double().eval(), inputs((3, 5))
    logits = model(x)[torch.arange(3), TARGET].detach()
    ours = ga.LRP(rules={nn.Linear: "wsquare"})(model, x, TARGET)
    theirs = zennit_relevance(zennit, model, x, TARGET,
                              zennit.composites.LayerMapComposite([(nn.Linear, zennit.rules.WSquare())]))
    w = model[0].weight.detach()
    hand = logits[:, None] * w[TARGET] ** 2 / ((w[TARGET] ** 2).sum(1, keepdim=True) + 1e-6)
    assert torch.allclose(ours, hand, rtol=1e-12)
    assert torch.allclose(ours.sum(1), logits, rtol=1e-5)
    assert ((theirs.sum(1) - logits).abs() > 1e-3 * logits.abs()).all()


def test_epsilon_rule_on_a_linear_model_is_input_times_weight():
    """One dense layer without bias: R_i = x_i w_ti y_t / (y_t + eps sign(y_t)); with eps = 0 the relevance is
    x * w_t and sums to the logit."""
    torch.manual_seed(5)
    model, x = nn.Linear(7, 3, bias=False).double().eval(), inputs((3, 7))
    got = ga.LRP(epsilon=0.0)(model, x, TARGET)
    assert torch.allclose(got, x * model.weight.detach()[TARGET], rtol=1e-12, atol=0)
    logits = model(x)[torch.arange(3), TARGET].detach()
    assert torch.allclose(got.sum(1), logits, rtol=1e-12)
    eps = 0.5
    y = logits[:, None]
    assert torch.allclose(ga.LRP(epsilon=eps)(model, x, TARGET), x * model.weight.detach()[TARGET] * y /
                          (y + eps * torch.where(y >= 0, 1.0, -1.0)), rtol=1e-12)


def test_zplus_conserves_relevance_and_is_positive_on_a_bias_free_relu_cnn():
    """z+ everywhere, no biases: every layer hands on all of its relevance (up to the 1e-6 stabiliser), and
    relevance stays positive for a positive logit."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3, bias=False)).double().eval()
    x = inputs().abs()
    model[-1].weight.data.abs_()
    got = ga.LRP(rules={nn.Linear: "zplus"})(model, x, TARGET)
    logits = model(x)[torch.arange(3), TARGET].detach()
    assert (logits > 0).all() and (got >= 0).all()
    assert torch.allclose(got.sum((1, 2, 3)), logits, rtol=1e-4)


def test_other_layer_kinds_equal_zennit(zennit):
    """1-D and 3-D convolutions, a transposed convolution with BatchNorm, "same", reflect and circular padding,
    groups, dilation, stride, and global average pooling."""
    cases = [
        (nn.Sequential(nn.Conv1d(3, 4, 3, padding="same", padding_mode="reflect"), nn.BatchNorm1d(4), nn.ReLU(),
                       nn.Conv1d(4, 4, 4, padding="same", groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)),
         (3, 3, 6)),
        (nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(4),
                       nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, dilation=2, padding=2), nn.ReLU(), nn.Flatten(),
                       nn.Linear(36, 3)), (3, 3, 3, 3)),
        (nn.Sequential(nn.Conv3d(2, 3, 3, padding=1, padding_mode="circular"), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                       nn.Flatten(), nn.Linear(3, 3)), (3, 2, 3, 3, 3)),
    ]
    torch.manual_seed(7)
    for model, shape in cases:
        model, x = randomised(model), inputs(shape)
        for name in ("EpsilonPlus", "EpsilonAlpha2Beta1"):
            with warnings.catch_warnings():         # torch's, on zennit's "same" padding with an even kernel
                warnings.simplefilter("ignore", UserWarning)
                expected = zennit_relevance(zennit, model, x, TARGET, zennit_composite(zennit, name))
            got = ga.LRP(name)(model, x, TARGET)
            assert torch.allclose(got, expected, rtol=0, atol=1e-6 * expected.abs().max().item()), (shape, name)


def test_grouped_transposed_convolution_folds_its_batchnorm(zennit):
    """zennit's canonizer cannot fold a BatchNorm after a grouped transposed convolution (it scales the weight
    [in, out / groups, ...] by all out channels, and raises, leaving a bias it added on the model); ours folds it
    per group: with epsilon = 0 everywhere and no biases, relevance is conserved and equals x * gradient (the
    network is linear)."""
    torch.manual_seed(8)
    model = randomised(nn.Sequential(nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2, bias=False), nn.BatchNorm2d(6),
                                     nn.Flatten(), nn.Linear(6 * 64, 3, bias=False)))
    bn = model[1]
    bn.bias.data.zero_()
    bn.running_mean.zero_()
    x = inputs((3, 4, 4, 4))
    theirs = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="must match the size"):
        zennit_relevance(zennit, theirs, x, TARGET, zennit_composite(zennit, "EpsilonPlus"))
    assert theirs[0].bias is not None                 # and leaves the bias it added to the layer
    got = ga.LRP(epsilon=0.0, rules={nn.ConvTranspose2d: Epsilon(0.0)})(model, x, TARGET)
    logits = model(x)[torch.arange(3), TARGET].detach()
    assert torch.allclose(got.sum((1, 2, 3)), logits, rtol=1e-9)
    grad = torch.autograd.functional.jacobian(lambda t: model(t)[torch.arange(3), TARGET].sum(), x)
    assert torch.allclose(got, x * grad, rtol=1e-9, atol=1e-12)   # a linear net: epsilon-0 LRP is x * gradient


def test_in_place_model_gives_the_same_relevance_as_its_out_of_place_twin():
    """In-place ReLUs and ``out += x`` (tests/nets.py's ResNet-like net) against the same net written out of place."""
    model, x = double(resnet_like()), inputs()
    for name in ("EpsilonPlus", "EpsilonAlpha2Beta1"):
        got = ga.LRP(name)(model, x, TARGET)
        assert got.abs().max() > 0 and torch.equal(got, ga.LRP(name)(double(out_of_place(model)), x, TARGET))


def test_batches_and_targets():
    model, x = cnn(), inputs()
    whole = ga.LRP()(model, x, TARGET)
    assert torch.allclose(ga.LRP()(model, x, TARGET, batch_size=1), whole, rtol=1e-10, atol=1e-15)
    logits = model(x)
    contrast = ga.LRP(rules={nn.Linear: Epsilon(0.0)})(model, x, ga.Contrast(TARGET, (TARGET + 1) % 3))
    top = ga.LRP(rules={nn.Linear: Epsilon(0.0)})(model, x, lambda out: out[torch.arange(3), TARGET] -
                                                   out[torch.arange(3), (TARGET + 1) % 3])
    assert torch.allclose(contrast, top) and logits.shape == (3, 3)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(h * torch.sigmoid(h))


class RawWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.linear(self.fc(x), self.w)


class Shift(nn.Module):
    def forward(self, x):
        return x + 1.0


class HeadFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.body = nn.Linear(4, 4)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class Unfed(nn.Module):
    """A BatchNorm registered right after a layer but fed something else."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.bn(torch.relu(self.fc(x))))


REFUSED = [
    ("layernorm", lambda: nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3)), {}, "layer_norm"),
    ("product", Gated, {}, "mul"),
    ("raw weight", RawWeight, {}, "linear outside a dense or convolution module"),
    ("batchnorm first", lambda: nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3)), {}, "cannot be folded"),
    ("batchnorm unfed", Unfed, {}, "cannot be folded"),
    ("constant", lambda: nn.Sequential(nn.Linear(4, 4), Shift(), nn.Linear(4, 3)), {}, "addition of a constant"),
    ("first layer order", HeadFirst, {"composite": "EpsilonPlusFlat"}, "'body' ran first"),
    ("softmax", lambda: nn.Sequential(nn.Linear(4, 3), nn.Softmax(1)), {}, "softmax"),
]


@pytest.mark.parametrize("name, build, settings, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_refuses_what_no_rule_covers_and_leaves_the_model_as_found(name, build, settings, message):
    torch.manual_seed(9)
    model = randomised(build())
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        ga.LRP(**settings)(model, inputs((3, 4)), TARGET)
    assert_unchanged(model, before)


@pytest.mark.parametrize("settings, message", [
    ({"composite": "Epsilon"}, "composite must be one of"),
    ({"composite": "EpsilonGammaBox"}, "needs low="),
    ({"rules": {nn.Linear: "zb"}}, "an LRP rule must be one of"),
    ({"rules": {nn.Linear: "zbox"}}, "needs low="),
    ({"rules": ["fc"]}, "rules must be a mapping"),
    ({"epsilon": -1}, "epsilon must be a number >= 0"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        ga.LRP(**settings)


@pytest.mark.parametrize("settings, message", [
    ({"rules": {"nope": "zplus"}}, "'nope' is not a module of the model"),
    ({"rules": {"1": "zplus"}}, "'1' is a ReLU; rules apply to dense and convolutional layers"),
    ({"rules": {nn.Conv2d: "zplus"}}, "no layer of the model is a Conv2d, so its rule catches nothing"),
    ({"rules": {nn.ReLU: "zplus"}}, "keys must be layer names or dense/convolution module types"),
    ({"composite": "EpsilonGammaBox", **BOX}, "gives 'zbox' to the first convolution, and this model has none"),
])
def test_rules_that_catch_nothing_are_refused(settings, message):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        ga.LRP(**settings)(model, inputs((3, 4)), TARGET)
    assert_unchanged(model, before)


def test_registry_names():
    assert METHODS["lrp"](MethodSettings()) == ga.LRP()
    assert METHODS["lrp-epsilon-plus-flat"](MethodSettings()) == ga.LRP("EpsilonPlusFlat")
    assert METHODS["lrp-epsilon-alpha2-beta1"](MethodSettings()) == ga.LRP("EpsilonAlpha2Beta1")
