"""Layer methods at transformer token layers [B, T, C] and channels-last grids [B, H, W, C], and layer="auto".

The models are Hugging Face ViT, DeiT (class + distillation token), Swin (tokens on a grid that
halves per stage) and ConvNeXt (channels-last norms), built from tiny random configs (image 32):
no download. Each oracle is the hand computation of its docstring, on the same model.
"""

import pytest
import torch
import torch.nn.functional as F
import transformers
from helpers import assert_close_rel, assert_unchanged, snapshot
from nets import resnet_like, small_cnn
from torch import nn

import gradaudit as ga

VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=64, num_labels=3)


class Logits(nn.Module):
    """A Hugging Face image classifier as a model of pixels returning logits [B, K]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def build(kind):
    torch.manual_seed(0)
    if kind == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT))
    elif kind == "deit":
        model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**VIT))
    elif kind == "swin":
        model = transformers.SwinForImageClassification(transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3))
    else:
        model = transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
            image_size=32, patch_size=4, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3,
            layer_scale_init_value=1.0))     # the default 1e-6 scales every block gradient down to ~1e-8
    for name, module in model.named_modules():
        if "classifier" in name and isinstance(module, nn.Linear):    # HF heads start near zero: tiny gradients
            nn.init.normal_(module.weight)
    return Logits(model).eval()


@pytest.fixture(scope="module")
def models():
    return {kind: build(kind) for kind in ("vit", "deit", "swin", "convnext")}


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


TARGET = torch.tensor([0, 2])


def observed(model, x, layer, target=TARGET):
    """Output a of the module ``layer`` and the gradient of the target logits with respect to it."""
    module = dict(model.named_modules())[layer]
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), store["a"])
    return store["a"].detach(), g


def as_grid(t, prefix, grid, channels_last=False):
    """Tokens [B, T, C] without the prefix, or a channels-last grid, as [B, C, h, w]."""
    if channels_last:
        return t.permute(0, 3, 1, 2)
    return t[:, prefix:].reshape(len(t), *grid, t.shape[2]).permute(0, 3, 1, 2)


def hand_gradcam(a, g, size, relu):
    """sum_c mean_ij(g_c) a_c, ReLU, bilinear upsampling to ``size`` (align_corners=False)."""
    cam = (g.mean((2, 3), keepdim=True) * a).sum(1)
    cam = cam.clamp(min=0) if relu else cam
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


CASES = {   # model, layer, prefix tokens, patch grid at that layer, channels last
    "vit": ("vit", "model.vit.layers.1.layernorm_before", 1, (4, 4), False),
    "deit": ("deit", "model.deit.layers.1.layernorm_before", 2, (4, 4), False),
    "swin-stage1": ("swin", "model.swin.encoder.layers.0.blocks.0.layernorm_before", 0, (8, 8), False),
    "swin-stage2": ("swin", "model.swin.encoder.layers.1.blocks.0.layernorm_before", 0, (4, 4), False),
    "convnext-channels-last": ("convnext", "model.convnext.encoder.stages.1.layers.0.layernorm", 0, (4, 4), True),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("relu", [True, False])
def test_gradcam_at_a_token_layer_equals_the_hand_computation(models, x, case, relu):
    kind, layer, prefix, grid, channels_last = CASES[case]
    model = models[kind]
    before = snapshot(model)
    a, g = observed(model, x, layer)
    expected = hand_gradcam(as_grid(a, prefix, grid, channels_last), as_grid(g, prefix, grid, channels_last),
                            x.shape[2:], relu)
    got = ga.GradCAM(layer, relu=relu)(model, x, TARGET)
    assert got.shape == (2, 32, 32)
    assert expected.abs().amax() > 1e-3          # a real map, not two zeros compared
    assert_close_rel(got, expected, 1e-5)
    assert_unchanged(model, before)


def test_the_layer_by_name_and_by_module_give_the_same_map(models, x):
    model = models["deit"]
    name = CASES["deit"][1]
    by_name = ga.GradCAM(name)(model, x, TARGET)
    by_module = ga.GradCAM(dict(model.named_modules())[name])(model, x, TARGET)
    assert torch.equal(by_name, by_module)


def test_grid_and_prefix_override_what_is_inferred(models, x):
    model, layer = models["vit"], CASES["vit"][1]
    inferred = ga.GradCAM(layer, relu=False)(model, x, TARGET)
    assert torch.equal(ga.GradCAM(layer, relu=False, grid=(4, 4), prefix=1)(model, x, TARGET), inferred)
    assert torch.equal(ga.GradCAM(layer, relu=False, prefix=1)(model, x, TARGET), inferred)
    # A different reading of the same 17 tokens is honoured: 2 x 8 patches after one prefix token.
    a, g = observed(model, x, layer)
    expected = hand_gradcam(as_grid(a, 1, (2, 8)), as_grid(g, 1, (2, 8)), (2, 8), relu=False)
    assert_close_rel(ga.GradCAM(layer, relu=False, grid=(2, 8), upsample=False)(model, x, TARGET), expected)
    with pytest.raises(ValueError, match=r"\[2, 17, 32\] .* not prefix \+ height \* width tokens for grid=\(5, 5\)"):
        ga.GradCAM(layer, grid=(5, 5))(model, x, TARGET)
    with pytest.raises(ValueError, match=r"for grid=\(3, 3\) and prefix=1"):
        ga.GradCAM(layer, grid=(3, 3), prefix=1)(model, x, TARGET)
    with pytest.raises(ValueError, match="grid must be None or"):
        ga.GradCAM(layer, grid=(4, 0))
    with pytest.raises(ValueError, match="prefix must be None or"):
        ga.GradCAM(layer, prefix=-1)


class LinearPatches(nn.Module):
    """A token model whose patch embedding is a Linear on unfolded 8x8 patches: no Conv2d to infer the grid from."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.norm, self.head = nn.Linear(3 * 64, 16), nn.LayerNorm(16), nn.Linear(16, 3)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))

    def forward(self, x):
        tokens = self.embed(F.unfold(x, 8, stride=8).transpose(1, 2))
        tokens = self.norm(torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1))
        return self.head(tokens.mean(1))


def test_a_grid_that_cannot_be_inferred_is_one_clear_error_naming_grid(x):
    model = LinearPatches().eval()
    with pytest.raises(ValueError, match=r"layer 'norm' outputs tokens \[2, 17, 16\].*cannot be inferred: the model "
                                         r"has no patch embedding.*pass grid=\(height, width\)"):
        ga.GradCAM("norm")(model, x, TARGET)
    a, g = observed(model, x, "norm")
    expected = hand_gradcam(as_grid(a, 1, (4, 4)), as_grid(g, 1, (4, 4)), x.shape[2:], relu=False)
    assert_close_rel(ga.GradCAM("norm", relu=False, grid=(4, 4))(model, x, TARGET), expected)


def test_tokens_that_fit_no_grid_name_the_patch_embedding(models):
    model = models["vit"]
    with pytest.raises(ValueError, match=r"fits neither the patch grid.*'model.vit.embeddings.patch_embeddings"
                                         r".projection' \(stride 8x8\) on inputs 32x32 gives a 4x4 grid.*grid="):
        ga.GradCAM(CASES["vit"][1], prefix=3)(model, torch.rand(1, 3, 32, 32))


def test_every_layer_method_reads_token_layers(models, x):
    model, layer = models["deit"], CASES["deit"][1]
    before = snapshot(model)
    a, g = observed(model, x, layer)
    a, g = as_grid(a, 2, (4, 4)), as_grid(g, 2, (4, 4))
    assert_close_rel(ga.NormGrad(layer, upsample=False)(model, x, TARGET), a.norm(dim=1) * g.norm(dim=1))
    assert_close_rel(ga.LinearApprox(layer, upsample=False)(model, x, TARGET), (a * g).sum(1))
    for method in (ga.GradCAMPlusPlus(layer), ga.SmoothGradCAMPlusPlus(layer, samples=2),
                   ga.LayerSaliency(layer, virtual="conv3x3"), ga.Combine([ga.NormGrad(layer), ga.GradCAM(layer)])):
        out = method(model, x, TARGET)
        assert out.shape == (2, 32, 32) and torch.isfinite(out).all(), type(method).__name__
    guided = ga.GuidedGradCAM(layer)(model, x, TARGET)
    assert guided.shape == x.shape and torch.isfinite(guided).all()
    assert_unchanged(model, before)


def test_after_the_last_block_patch_tokens_have_zero_gradient(models, x):
    """Why layer="auto" stops at the last block's first norm: only the class token reaches the head."""
    model = models["vit"]
    assert ga.GradCAM("model.vit.layernorm", relu=False)(model, x, TARGET).abs().amax() == 0
    assert ga.GradCAM(CASES["vit"][1], relu=False)(model, x, TARGET).abs().amax() > 1e-3


@pytest.mark.parametrize(("kind", "chosen"), [
    ("vit", "model.vit.layers.1.layernorm_before"),
    ("deit", "model.deit.layers.1.layernorm_before"),
    ("swin", "model.swin.encoder.layers.1.blocks.0.layernorm_before"),
    ("convnext", "model.convnext.encoder.stages.1"),
])
def test_auto_layer_on_transformers_picks_the_last_blocks_first_norm_and_warns(models, x, kind, chosen):
    model = models[kind]
    before = snapshot(model)
    with pytest.warns(UserWarning, match=f"layer='auto' chose '{chosen}'"):
        auto = ga.GradCAM("auto")(model, x, TARGET)
    assert torch.equal(auto, ga.GradCAM(chosen)(model, x, TARGET))
    assert_unchanged(model, before)


@pytest.mark.parametrize(("net", "chosen", "shape"), [
    (small_cnn, "4", r"\[batch, 6, 4, 4\]"),              # the ReLU after the last conv, before Flatten
    (resnet_like, "layer2", r"\[batch, 6, 8, 8\]"),       # the last block, before global average pooling
])
def test_auto_layer_on_a_cnn_picks_the_last_spatial_layer_and_warns(net, chosen, shape):
    model = net()
    x = torch.rand(2, 1 if net is small_cnn else 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    for method in (ga.GradCAM, ga.NormGrad):
        with pytest.warns(UserWarning, match=f"layer='auto' chose '{chosen}', the last layer with a spatial output, "
                                             f"shape {shape}"):
            auto = method("auto")(model, x)
        assert torch.equal(auto, method(chosen)(model, x))
    with pytest.warns(UserWarning, match=f"chose '{chosen}'"):
        combined = ga.Combine([ga.GradCAM("auto"), ga.NormGrad(chosen)])(model, x)
    assert torch.equal(combined, ga.Combine([ga.GradCAM(chosen), ga.NormGrad(chosen)])(model, x))
    assert_unchanged(model, before)


def test_auto_layer_without_a_spatial_layer_says_so():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    with pytest.raises(ValueError, match="layer='auto' found no layer with a spatial output"):
        ga.GradCAM("auto")(model, torch.rand(2, 3, 2, 2))
