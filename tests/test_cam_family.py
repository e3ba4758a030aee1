"""The CAM family against pytorch-grad-cam 1.5.7: ScoreCAM, LayerCAM, XGradCAM, HiResCAM, GradCAMElementWise,
EigenCAM, EigenGradCAM, AblationCAM and FullGrad, on a small CNN with BatchNorm and on a residual network, float64.

grad-cam's package ``__init__`` imports every module, some of which import torchvision (not installable beside our
torch); ``grad_cam()`` loads the modules used here by path and lets a stub stand in for torchvision only while
``utils/image.py`` and ``utils/model_targets.py`` import it (they use it for transforms and detection targets
never called here). The layer CAMs are compared *before* grad-cam's min-max scaling and resizing: its
``scale_cam_image`` is swapped for the identity in ``base_cam``, so its own pipeline (hooks, weights, ReLU) runs
and returns the raw map at the layer's resolution. grad-cam rounds ScoreCAM's scores (``torch.Tensor(list)``),
AblationCAM's scores and the Eigen projections (``np.float32``) to float32; ``peer_raw`` has those three roundings
keep float64, so the comparisons measure the recipes, not the rounding: equal within 1e-10 of the map's largest
value. FullGrad is compared after grad-cam's final scaling, applied to ours: grad-cam resizes with cv2 in float32,
so within 1e-6 there.
"""

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
from helpers import assert_close_rel, assert_unchanged, snapshot
from nets import double, resnet_like, vary_batchnorm
from torch import nn

import gradaudit as ga
from gradaudit.maps import resize

CLASSES = torch.tensor([0, 2])
PEERS = ("score_cam", "layer_cam", "xgrad_cam", "hirescam", "grad_cam_elementwise", "eigen_cam", "eigen_grad_cam",
         "ablation_cam", "fullgrad_cam", "base_cam", "utils.reshape_transforms", "utils.svd_on_activations")


@pytest.fixture(scope="module")
def grad_cam():
    """{module name: module} of pytorch-grad-cam, loaded without its package ``__init__`` (see the docstring)."""
    root = importlib.util.find_spec("pytorch_grad_cam").submodule_search_locations[0]
    for name, path in (("pytorch_grad_cam", root), ("pytorch_grad_cam.utils", f"{root}/utils")):
        package = types.ModuleType(name)
        package.__path__ = [path]
        sys.modules[name] = package
    stub, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    transforms.Compose = transforms.Normalize = transforms.ToTensor = None
    stub.transforms = transforms
    saved = {name: sys.modules.get(name) for name in ("torchvision", "torchvision.transforms")}
    sys.modules.update({"torchvision": stub, "torchvision.transforms": transforms})
    try:
        return {name: importlib.import_module(f"pytorch_grad_cam.{name}") for name in PEERS}
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def bn_cnn(channels=3, classes=3):
    """conv -> BN -> ReLU -> max-pool -> conv -> BN -> ReLU -> linear, with non-trivial BatchNorm statistics."""
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, classes))
    return vary_batchnorm(net).double().eval()


CASES = {"bn_cnn": (bn_cnn, "6"), "residual": (lambda: double(resnet_like(inplace=False)), "layer1")}


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7))


class Float64Numpy(types.ModuleType):
    """numpy, except that ``float32`` is ``float64``: grad-cam's roundings kept in float64."""

    def __getattr__(self, name):
        return np.float64 if name == "float32" else getattr(np, name)


def peer_raw(grad_cam, monkeypatch, cls, model, layer, x, classes, **kwargs):
    """grad-cam's map at the layer's resolution, after its ReLU and before its scaling, float64 [B, h, w]."""
    monkeypatch.setattr(grad_cam["base_cam"], "scale_cam_image", lambda cam, target_size=None: np.asarray(cam))
    for name in ("ablation_cam", "utils.svd_on_activations"):
        monkeypatch.setattr(grad_cam[name], "np", Float64Numpy("numpy"))
    scores = types.SimpleNamespace(no_grad=torch.no_grad, nn=torch.nn, from_numpy=torch.from_numpy,
                                   Tensor=lambda values: torch.tensor(values, dtype=torch.float64))
    monkeypatch.setattr(grad_cam["score_cam"], "torch", scores)
    module = dict(model.named_modules())[layer]
    with cls(model=model, target_layers=[module], **kwargs) as cam:
        out = cam(input_tensor=x, targets=[lambda o, c=int(c): o[c] for c in classes])
    return torch.from_numpy(np.asarray(out, dtype=np.float64))


SIMPLE = {"LayerCAM": "layer_cam", "XGradCAM": "xgrad_cam", "HiResCAM": "hirescam",
          "GradCAMElementWise": "grad_cam_elementwise"}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", SIMPLE)
def test_gradient_cams_equal_grad_cam(grad_cam, monkeypatch, x, case, name):
    build, layer = CASES[case]
    model = build()
    ours = getattr(ga, name)(layer, upsample=False)(model, x, CLASSES)
    theirs = peer_raw(grad_cam, monkeypatch, getattr(grad_cam[SIMPLE[name]], name), model, layer, x, CLASSES)
    assert ours.abs().max() > 1e-4
    assert_close_rel(ours, theirs, rel=1e-10)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["ScoreCAM", "AblationCAM"])
def test_masked_cams_equal_grad_cam(grad_cam, monkeypatch, x, case, name):
    build, layer = CASES[case]
    model = build()
    ours = getattr(ga, name)(layer, upsample=False)(model, x, CLASSES)
    module = grad_cam["score_cam" if name == "ScoreCAM" else "ablation_cam"]
    theirs = peer_raw(grad_cam, monkeypatch, getattr(module, name), model, layer, x, CLASSES)
    assert ours.abs().max() > 1e-4
    assert_close_rel(ours, theirs, rel=1e-10)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["EigenCAM", "EigenGradCAM"])
def test_eigen_cams_equal_grad_cam_up_to_its_arbitrary_sign(grad_cam, monkeypatch, x, case, name):
    """grad-cam's projection has numpy's SVD sign; ours is signed to correlate with the channel sum. Each of
    grad-cam's maps is ReLU(p) or ReLU(-p) of our signed projection p."""
    build, layer = CASES[case]
    model = build()
    signed = getattr(ga, name)(layer, upsample=False, relu=False)(model, x, CLASSES)
    assert torch.equal(getattr(ga, name)(layer, upsample=False)(model, x, CLASSES), signed.clamp(min=0))
    module = grad_cam["eigen_cam" if name == "EigenCAM" else "eigen_grad_cam"]
    theirs = peer_raw(grad_cam, monkeypatch, getattr(module, name), model, layer, x, CLASSES)
    for ours_b, theirs_b in zip(signed, theirs, strict=True):
        errors = [(sign * ours_b).clamp(min=0).sub(theirs_b).abs().max() for sign in (1, -1)]
        assert min(errors) <= 1e-10 * ours_b.abs().max()


def test_eigen_sign_correlates_with_the_channel_sum(grad_cam, x):
    """Our sign is fixed: the projection correlates non-negatively with sum_k a_k, whatever SVD returns; on the
    flipped activations -a the channel sum flips too, so the projection is the same."""
    model = bn_cnn()
    a = ga.EigenCAM("6", upsample=False, relu=False)
    signed = a(model, x)
    acts = dict(model.named_modules())
    with torch.no_grad():
        total = acts["6"](acts["5"](acts["4"](acts["3"](acts["2"](acts["1"](acts["0"](x))))))).sum(1)
    centred = total - total.mean((1, 2), keepdim=True)
    assert ((signed * centred).sum((1, 2)) >= 0).all()


@pytest.mark.parametrize("case", CASES)
def test_fullgrad_equals_grad_cam(grad_cam, x, case):
    """grad-cam's FullGrad (every Conv2d / BatchNorm2d bias) after its final min-max scaling, against ours scaled
    the same way; grad-cam resizes in float32 with cv2, hence 1e-6."""
    model = CASES[case][0]()
    ours = ga.FullGrad()(model, x, CLASSES)
    flat = ours.flatten(1) - ours.flatten(1).amin(1, keepdim=True)
    scaled = (flat / (1e-7 + flat.amax(1, keepdim=True))).view_as(ours)
    peer = grad_cam["fullgrad_cam"].FullGrad(model, [])
    theirs = peer(input_tensor=x, targets=[lambda o, c=int(c): o[c] for c in CLASSES])
    peer.activations_and_grads.release()
    assert_close_rel(scaled, torch.from_numpy(np.asarray(theirs, dtype=np.float64)), rel=1e-6)


def test_fullgrad_is_complete():
    """The full-gradient decomposition the map is built from: grad.x + sum of the bias-gradients = the score
    exactly (no nonlinearity with an implicit bias: ReLU, max-pool), so no bias was missed."""
    from gradaudit.engine.bias import bias_gradients, bias_layers
    from gradaudit.engine.target import Classes

    model = bn_cnn()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    rows = torch.arange(2)
    grad, terms = bias_gradients(model, x, Classes(CLASSES), rows, bias_layers(model))
    linear = model[8].bias[CLASSES]                              # the Linear head's bias: no spatial map
    total = (grad * x).flatten(1).sum(1) + sum(t.flatten(1).sum(1) for t in terms) + linear
    assert torch.allclose(total, model(x)[rows, CLASSES], rtol=0, atol=1e-12)


def test_grad_cam_score_cam_depends_on_a_shift_of_every_logit(grad_cam, monkeypatch, x):
    """grad-cam softmaxes the masked inputs' *logits* over channels. Adding the same input-dependent amount to
    every logit leaves every class probability (so the paper's scores) unchanged, yet changes its map; ours with
    the probability as the target does not change."""

    class Shifted(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, inputs):
            return self.net(inputs) + 50 * inputs.mean((1, 2, 3), keepdim=True).squeeze(-1).squeeze(-1)

    model = bn_cnn()
    shifted = Shifted(model).eval()
    plain = peer_raw(grad_cam, monkeypatch, grad_cam["score_cam"].ScoreCAM, model, "6", x, CLASSES)
    moved = peer_raw(grad_cam, monkeypatch, grad_cam["score_cam"].ScoreCAM, shifted, "net.6", x, CLASSES)
    assert (plain - moved).abs().max() > 0.1 * plain.abs().max()
    probability = ga.ScoreCAM("6", upsample=False)(model, x, lambda out: out.softmax(1)[:, 2])
    assert torch.allclose(ga.ScoreCAM("net.6", upsample=False)(shifted, x, lambda out: out.softmax(1)[:, 2]),
                          probability, rtol=0, atol=1e-12)


def ablated_by_hand(model, layer, x, fill, channel=lambda out, k: (slice(None), k), read=lambda a: a):
    """Ablation-CAM's signed map with each channel k of ``layer`` (the elements ``channel(out, k)`` of its
    output) set to ``fill(output)`` in turn (a test hook); ``read`` makes the output a channels-first map."""
    module, rows = dict(model.named_modules())[layer], torch.arange(len(x))
    with torch.no_grad():
        y = model(x)[rows, CLASSES]
        channels = {}
        handle = module.register_forward_hook(lambda m, i, out: channels.setdefault("a", out.clone()))
        model(x)
        handle.remove()
        a, weights = read(channels["a"]), []
        for k in range(a.shape[1]):
            def ablate(m, i, out, k=k):
                out = out.clone()
                out[channel(out, k)] = fill(out)
                return out
            handle = module.register_forward_hook(ablate)
            weights.append((y - model(x)[rows, CLASSES]) / y)
            handle.remove()
    return (torch.stack(weights, 1)[:, :, None, None] * a).sum(1)


def test_grad_cam_ablation_deviates_from_the_paper_where_activations_are_negative(grad_cam, monkeypatch, x):
    """Where the layer's values can be negative (a ResNet block's last BatchNorm, before ``+ identity`` and the
    ReLU) grad-cam sets the ablated channel to min - 1e7 rather than 0: its map is not the paper's. Ours zeroes
    the channel; both are checked against the two fills applied by hand."""
    model, layer = double(resnet_like(inplace=False)), "layer1.bn2"
    ours = ga.AblationCAM(layer, upsample=False, relu=False)(model, x, CLASSES)
    assert torch.allclose(ours, ablated_by_hand(model, layer, x, lambda out: 0), rtol=0, atol=1e-12)
    theirs = peer_raw(grad_cam, monkeypatch, grad_cam["ablation_cam"].AblationCAM, model, layer, x, CLASSES)
    grad_cams_fill = ablated_by_hand(model, layer, x, lambda out: out.min() - 1e7).clamp(min=0)
    assert_close_rel(theirs, grad_cams_fill, rel=1e-10)
    assert (ours.clamp(min=0) - theirs).abs().max() > 0.1 * theirs.abs().max()


def test_grad_cam_reads_activations_that_a_later_in_place_add_changed(grad_cam, monkeypatch):
    """On CPU grad-cam stores ``output.cpu().detach()``, the layer's output itself; a later in-place
    ``out += identity`` (a ResNet block) then changes what it read. Ours reads the layer's own output: on the
    out-of-place twin both agree, on the in-place network only ours stays the same."""
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    inplace, twin = double(resnet_like(inplace=True)), double(resnet_like(inplace=False))
    layer = "layer1.bn2"
    ours = ga.HiResCAM(layer, upsample=False)(inplace, x, CLASSES)
    assert torch.equal(ours, ga.HiResCAM(layer, upsample=False)(twin, x, CLASSES))
    cls = grad_cam["hirescam"].HiResCAM
    assert torch.allclose(peer_raw(grad_cam, monkeypatch, cls, twin, layer, x, CLASSES), ours, rtol=0, atol=1e-10)
    assert (peer_raw(grad_cam, monkeypatch, cls, inplace, layer, x, CLASSES) - ours).abs().max() > 1e-3


CAMS = [ga.ScoreCAM, ga.LayerCAM, ga.XGradCAM, ga.HiResCAM, ga.GradCAMElementWise, ga.EigenCAM, ga.EigenGradCAM,
        ga.AblationCAM]


@pytest.mark.parametrize("cls", [*CAMS, ga.FullGrad])
def test_model_left_as_found(cls):
    """On the in-place ResNet, on success and on errors: a target of the wrong shape (in the masked or ablated
    passes for ScoreCAM and AblationCAM: the clean prediction passes it), and inputs the model cannot take."""
    model = resnet_like(inplace=True).train()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    method = cls() if cls is ga.FullGrad else cls("layer1")
    before = snapshot(model)
    with pytest.warns(UserWarning, match="train mode"):
        assert method(model, x, 1).shape == (2, 8, 8)
    assert_unchanged(model, before)
    masked = cls in (ga.ScoreCAM, ga.AblationCAM)
    if cls is not ga.EigenCAM:                                               # EigenCAM never scores a target
        with pytest.warns(UserWarning, match="train mode"), pytest.raises(ValueError, match="one score per example"):
            method(model, x, lambda out: out[:, 0] if masked and len(out) == 2 else out[:1, 0])
        assert_unchanged(model, before)
    with pytest.warns(UserWarning, match="train mode"), pytest.raises(ValueError, match="model\\(inputs\\) failed"):
        method(model, torch.rand(2, 4, 8, 8), 1)
    assert_unchanged(model, before)


def conv1d_and_twin():
    """A 1-D CNN and its 2-D twin on [B, C, 1, L] (kernels (1, k)): the same function of the signal."""
    torch.manual_seed(6)
    one = nn.Sequential(nn.Conv1d(2, 5, 3, padding=1), nn.BatchNorm1d(5), nn.ReLU(), nn.Conv1d(5, 4, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12, 3)).double().eval()
    two = nn.Sequential(nn.Conv2d(2, 5, (1, 3), padding=(0, 1)), nn.BatchNorm2d(5), nn.ReLU(),
                        nn.Conv2d(5, 4, (1, 3), padding=(0, 1)), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 12, 3)).double().eval()
    state = {k: v.unsqueeze(2) if v.ndim == 3 else v for k, v in one.state_dict().items()}
    two.load_state_dict(state)
    return one, two


@pytest.mark.parametrize("name", ["ScoreCAM", "LayerCAM", "AblationCAM", "FullGrad"])
def test_1d_equals_grad_cam_on_the_2d_twin(grad_cam, monkeypatch, name):
    one, two = conv1d_and_twin()
    x = torch.randn(2, 2, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    if name == "FullGrad":
        ours = ga.FullGrad()(one, x, CLASSES)
        assert torch.allclose(ours, ga.FullGrad()(two, x.unsqueeze(2), CLASSES).squeeze(1), rtol=0, atol=1e-12)
        return
    ours = getattr(ga, name)("4", upsample=False)(one, x, CLASSES)
    module = grad_cam[{"ScoreCAM": "score_cam", "LayerCAM": "layer_cam", "AblationCAM": "ablation_cam"}[name]]
    theirs = peer_raw(grad_cam, monkeypatch, getattr(module, name), two, "4", x.unsqueeze(2), CLASSES)
    assert ours.shape == (2, 12)
    assert_close_rel(ours, theirs.squeeze(1), rel=1e-10)


def conv3d_and_twin():
    """A 3-D CNN with kernels (1, 3, 3) and its 2-D twin: the same function of a volume of depth 1."""
    torch.manual_seed(9)
    three = nn.Sequential(nn.Conv3d(2, 5, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(5), nn.ReLU(),
                          nn.Conv3d(5, 4, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).double().eval()
    two = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double().eval()
    two.load_state_dict({k: v.squeeze(2) if v.ndim == 5 else v for k, v in three.state_dict().items()})
    return three, two


@pytest.mark.parametrize("name", ["ScoreCAM", "AblationCAM", "XGradCAM", "FullGrad"])
def test_3d_equals_grad_cam_on_the_2d_twin(grad_cam, monkeypatch, name):
    three, two = conv3d_and_twin()
    x = torch.randn(2, 2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    if name == "FullGrad":
        ours = ga.FullGrad()(three, x, CLASSES)
        assert torch.allclose(ours, ga.FullGrad()(two, x.squeeze(2), CLASSES).unsqueeze(1), rtol=0, atol=1e-12)
        return
    ours = getattr(ga, name)("4", upsample=False)(three, x, CLASSES)
    module = grad_cam[{"ScoreCAM": "score_cam", "AblationCAM": "ablation_cam", "XGradCAM": "xgrad_cam"}[name]]
    theirs = peer_raw(grad_cam, monkeypatch, getattr(module, name), two, "4", x.squeeze(2), CLASSES)
    assert ours.shape == (2, 1, 6, 6) and ours.abs().max() > 1e-4
    assert_close_rel(ours.squeeze(1), theirs, rel=1e-10)


class TinyViT(nn.Module):
    """Patch embedding (4x4 patches of an 8x8 image: a 2x2 grid), a class token, one token MLP block, class-token
    head: a token layer [B, 5, C] for the CAMs to read through the inferred grid."""

    def __init__(self, dim=6, classes=3):
        super().__init__()
        torch.manual_seed(8)
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(5, 5)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.patch(x).flatten(2).transpose(1, 2)], 1)
        tokens = self.norm(tokens)
        mixed = torch.relu(self.mix(tokens.transpose(1, 2)).transpose(1, 2))
        return self.head(mixed[:, 0])


@pytest.mark.parametrize("name", ["ScoreCAM", "LayerCAM", "EigenGradCAM"])
def test_token_layer_equals_grad_cam_with_its_vit_reshape(grad_cam, monkeypatch, x, name):
    model = TinyViT().double().eval()
    reshape = grad_cam["utils.reshape_transforms"].vit_reshape_transform
    module = grad_cam[{"ScoreCAM": "score_cam", "LayerCAM": "layer_cam", "EigenGradCAM": "eigen_grad_cam"}[name]]
    theirs = peer_raw(grad_cam, monkeypatch, getattr(module, name), model, "norm", x, CLASSES,
                      reshape_transform=lambda t: reshape(t, 2, 2))
    relu = name != "EigenGradCAM"
    ours = getattr(ga, name)("norm", upsample=False, relu=relu)(model, x, CLASSES)
    assert torch.equal(ours, getattr(ga, name)("norm", upsample=False, relu=relu, grid=(2, 2))(model, x, CLASSES))
    if relu:
        assert_close_rel(ours, theirs, rel=1e-10)
    else:
        for ours_b, theirs_b in zip(ours, theirs, strict=True):
            assert min((s * ours_b).clamp(min=0).sub(theirs_b).abs().max() for s in (1, -1)) <= 1e-10


def test_ablation_on_a_token_layer_zeroes_the_patch_tokens_channel(x):
    """On tokens [B, 1 + h*w, C] channel k of the patch tokens is zeroed, the class token left as it is."""
    model = TinyViT().double().eval()
    ours = ga.AblationCAM("norm", upsample=False, relu=False)(model, x, CLASSES)
    expected = ablated_by_hand(model, "norm", x, lambda out: 0, lambda out, k: (slice(None), slice(1, None), k),
                               lambda t: t[:, 1:].reshape(len(t), 2, 2, -1).permute(0, 3, 1, 2))
    assert ours.abs().max() > 1e-4
    assert torch.allclose(ours, expected, rtol=0, atol=1e-12)


def test_refusals(x):
    model = bn_cnn()
    with pytest.raises(ValueError, match="one input"):
        ga.ScoreCAM("6")(nn.Identity().eval(), (x, x), batch_size=2)
    with pytest.raises(ValueError, match="masks_per_pass"):
        ga.ScoreCAM("6", masks_per_pass=0)
    with pytest.raises(ValueError, match="exactly 0 for example 0"):
        ga.AblationCAM("6")(model, x, lambda out: out[:, 0] * 0)
    no_stats = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(),
                             nn.Linear(72, 2)).double().eval()
    with pytest.raises(ValueError, match="keeps no running statistics"):
        ga.FullGrad()(no_stats, x)
    with pytest.raises(TypeError, match="needs a layer"):
        ga.LayerCAM()
    flat = nn.Sequential(nn.Conv3d(2, 2, 1), nn.Flatten(2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(36, 2)).eval()
    with pytest.raises(ValueError, match="its map has 2 spatial axes and the inputs 3"):
        ga.ScoreCAM("2")(flat, torch.rand(2, 2, 2, 3, 3))


@pytest.mark.parametrize("cls", [ga.ScoreCAM, ga.AblationCAM])
def test_masked_passes_follow_masks_per_pass_and_batch_size(cls, x):
    """The same map whatever the rows per pass; ``masks_per_pass`` sets them and ``batch_size`` caps every pass."""
    model = bn_cnn()
    rows = []
    handle = model.register_forward_pre_hook(lambda m, inputs: rows.append(len(inputs[0])))
    full = cls("6")(model, x, CLASSES)
    with torch.no_grad():
        a = model[:7](x).flatten(2)
    live = int((a.amax(2) > 0).sum())                             # the all-zero channels need no pass
    assert live > 4 and max(rows) == live                         # every other channel of both examples in one pass
    rows.clear()
    assert torch.allclose(cls("6", masks_per_pass=3)(model, x, CLASSES), full, rtol=0, atol=1e-12)
    assert max(rows) == 3
    rows.clear()
    assert torch.allclose(cls("6", masks_per_pass=4)(model, x, CLASSES, batch_size=2), full, rtol=0, atol=1e-12)
    assert max(rows) == 2
    handle.remove()
    assert torch.equal(resize(cls("6", upsample=False)(model, x, CLASSES), (8, 8)), full)


NAMES = {"scorecam": ga.ScoreCAM, "layercam": ga.LayerCAM, "xgradcam": ga.XGradCAM, "hirescam": ga.HiResCAM,
         "gradcamelementwise": ga.GradCAMElementWise, "eigencam": ga.EigenCAM, "eigengradcam": ga.EigenGradCAM,
         "ablationcam": ga.AblationCAM, "fullgrad": ga.FullGrad}


def test_registry_names_build_the_methods(x):
    """``--method`` / ``--methods`` names: each builds its class (at ``--layer`` for the layer methods)."""
    from gradaudit.jobs.registry import LAYER_METHODS, MethodSettings, build_methods

    built = build_methods(NAMES, MethodSettings(layer="6"))
    assert {name: type(method) for name, method in built.items()} == NAMES
    assert set(NAMES) - set(LAYER_METHODS) == {"fullgrad"}
    assert all(built[name].layer == "6" for name in NAMES if name != "fullgrad")
