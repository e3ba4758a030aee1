"""1-D signals [B, C, L] and 3-D volumes / video [B, C, D, H, W]: the CAM family and the "There and Back
Again" grid (analytic truths, brute force), Occlusion (Captum as oracle), LIME / KernelSHAP block groups
(linear-model truths), heatmaps and figures."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion as CaptumOcclusion
from helpers import assert_close_rel, assert_unchanged, snapshot
from torch import nn

import gradaudit as ga
from gradaudit.maps import heatmap, minmax
from gradaudit.methods.layer_saliency import AGGREGATES, VIRTUALS, grid_map
from gradaudit.methods.perturb import feature_ids, ridge
from gradaudit.report.figures import CAM_ZERO_NOTE, MAX_SLICES, grid_figure

CONV = {1: nn.Conv1d, 3: nn.Conv3d}
POOL = {1: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool3d}


def gap_net(rank: int, classes=3):
    """strided conv -> ReLU -> conv -> ReLU -> global average pool -> linear, over ``rank`` spatial axes."""
    torch.manual_seed(7)
    conv = CONV[rank]
    return nn.Sequential(
        conv(2, 5, 3, padding=1, stride=2), nn.ReLU(), conv(5, 6, 3, padding=1), nn.ReLU(),
        POOL[rank](1), nn.Flatten(), nn.Linear(6, classes),
    ).double().eval()


def inputs(rank: int, batch=3, seed=8):
    torch.manual_seed(seed)
    spatial = {1: (11,), 3: (5, 6, 7)}[rank]
    return torch.randn(batch, 2, *spatial, dtype=torch.float64)


@pytest.mark.parametrize("rank", [1, 3])
def test_gradcam_equals_cam_over_locations(rank):
    model, x = gap_net(rank), inputs(rank)
    features = model[:4](x)                                     # [B, K, *spatial] before pooling
    cam = torch.einsum("k,bk...->b...", model[6].weight[1].detach(), features).clamp(min=0)
    locations = features[0, 0].numel()                          # d*h*w (3-D) or l (1-D)
    before = snapshot(model)
    coarse = ga.GradCAM("3", upsample=False)(model, x, 1)
    assert_close_rel(coarse * locations, cam)
    fine = ga.GradCAM("3")(model, x, 1)                         # linear / trilinear to the input's size
    mode = {1: "linear", 3: "trilinear"}[rank]
    expected = F.interpolate(coarse.unsqueeze(1), size=x.shape[2:], mode=mode, align_corners=False).squeeze(1)
    assert fine.shape == (len(x), *x.shape[2:])
    assert_close_rel(fine, expected, 1e-12)
    assert_unchanged(model, before)


@pytest.mark.parametrize("rank", [1, 3])
def test_cam_family_and_grid_give_input_sized_maps(rank):
    model, x = gap_net(rank), inputs(rank, batch=2)
    before = snapshot(model)
    for method in (ga.GradCAMPlusPlus("3"), ga.SmoothGradCAMPlusPlus("3", samples=2), ga.NormGrad("1"),
                   ga.LayerSaliency("3", virtual="conv3x3", aggregate="max"), ga.LinearApprox("3"),
                   ga.Combine([ga.NormGrad("1"), ga.GradCAM("3")])):
        attr = method(model, x, 0)
        assert attr.shape == (2, *x.shape[2:]) and torch.isfinite(attr).all(), type(method).__name__
    assert ga.GuidedGradCAM("3")(model, x, 0).shape == x.shape
    with pytest.warns(UserWarning, match="layer='auto' chose '3'"):
        assert torch.equal(ga.GradCAM("auto")(model, x, 0), ga.GradCAM("3")(model, x, 0))
    assert_unchanged(model, before)


def _patches(a: torch.Tensor) -> torch.Tensor:
    """[R, 3**rank, C, *spatial]: the zero-padded 3 x ... x 3 neighbourhood of every location, built by shifts."""
    rank = a.ndim - 2
    padded = F.pad(a, (1, 1) * rank)
    sizes = a.shape[2:]
    shifted = [padded[(..., *(slice(o, o + n) for o, n in zip(offset, sizes, strict=True)))]
               for offset in itertools.product(range(3), repeat=rank)]
    return torch.stack(shifted, 1)


def _materialised(a, g, virtual):
    """[R, N, *spatial]: every parameter-gradient value of the virtual layer at each location, explicitly."""
    if virtual == "scaling":
        return a * g
    if virtual == "bias":
        return g
    if virtual == "depthwise3x3":
        return (_patches(a) * g.unsqueeze(1)).flatten(1, 2)
    p = a if virtual == "conv1x1" else _patches(a).flatten(1, 2)
    return (p.unsqueeze(2) * g.unsqueeze(1)).flatten(1, 2)       # outer product p g^T


def _aggregate(v, aggregate):
    return {"sum": lambda: v.sum(1), "norm": lambda: v.norm(dim=1), "filter_norm": lambda: v.clamp(min=0).norm(dim=1),
            "max": lambda: v.amax(1)}[aggregate]()


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("virtual", VIRTUALS)
def test_grid_cells_equal_brute_force(rank, virtual):
    torch.manual_seed(9)
    shape = (2, 3, *((7,) if rank == 1 else (3, 4, 3)))
    a, g = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    for aggregate in AGGREGATES:
        assert_close_rel(grid_map(a, g, virtual, aggregate), _aggregate(_materialised(a, g, virtual), aggregate), 1e-10)


def test_layer_of_another_rank_is_a_clear_error():
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Flatten(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(2, 2)).double().eval()
    x = torch.randn(1, 1, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="as many spatial axes as the inputs"):
        ga.GradCAM("1")(model, x, 0)                            # a [R, C, L] output under 3-D inputs
    assert ga.GradCAM("1", upsample=False)(model, x, 0).shape == (1, 48)


@pytest.mark.parametrize("rank,window,stride", [(1, 3, 2), (1, (4,), (3,)), (3, 2, 1), (3, (2, 3, 4), (1, 2, 3))])
def test_occlusion_equals_captum(rank, window, stride):
    model, x = gap_net(rank), inputs(rank, batch=2)
    before = snapshot(model)
    ours = ga.Occlusion(window=window, stride=stride, fill=0.5)(model, x, 1, batch_size=5)
    w, s = ((window,) * rank, (stride,) * rank) if isinstance(window, int) else (window, stride)
    theirs = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(2, *w), strides=(1, *s), baselines=0.5,
                                              target=1)
    assert_close_rel(ours, theirs)
    assert_unchanged(model, before)


def test_occlusion_bad_windows():
    model, x = gap_net(3), inputs(3, batch=1)
    with pytest.raises(ValueError, match="window must be an int or a tuple of 3 ints"):
        ga.Occlusion(window=(2, 2))(model, x)
    with pytest.raises(ValueError, match=r"do not fit a 5x6x7 input"):
        ga.Occlusion(window=(6, 2, 2), stride=1)(model, x)
    with pytest.raises(ValueError, match=r"Occlusion needs inputs \[B, C, L\]"):
        ga.Occlusion()(nn.Linear(4, 2).eval(), torch.randn(2, 4))


def test_feature_groups_blocks_in_1d_and_3d():
    ids, d = feature_ids(3, (2, 7))
    assert d == 3 and torch.equal(ids[0], torch.tensor([0, 0, 0, 1, 1, 1, 2])) and torch.equal(ids[0], ids[1])
    ids, d = feature_ids(2, (2, 3, 4, 5))                       # 2x2x3 blocks, cropped at the edges
    assert d == 2 * 2 * 3 and ids.shape == (2, 3, 4, 5) and torch.equal(ids[0], ids[1])
    z, i, j = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(5), indexing="ij")
    assert torch.equal(ids[0], (z // 2) * 6 + (i // 2) * 3 + j // 2)
    ids, d = feature_ids((1, 4, 5), (1, 3, 4, 5))               # one block size per axis: one block per slice
    assert d == 3 and torch.equal(ids[0], z)
    superpixels = torch.tensor([[0, 0, 1], [2, 2, 1]]).expand(2, 2, 3)
    ids, d = feature_ids(superpixels, (4, 2, 2, 3))
    assert d == 3 and torch.equal(ids[3], superpixels)
    with pytest.raises(ValueError, match=r"a tuple of 3 block sizes .* int tensor of shape \[3, 4, 5\]"):
        feature_ids((2, 2), (1, 3, 4, 5))


def linear_net(shape, classes=2):
    torch.manual_seed(10)
    return nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(shape).numel(), classes)).double().eval()


@pytest.mark.parametrize("shape,groups", [((2, 9), 4), ((1, 4, 4, 4), 2), ((2, 3, 4, 4), (1, 2, 2))])
def test_kernelshap_block_groups_recover_linear_truth(shape, groups):
    model = linear_net(shape)
    torch.manual_seed(11)
    x = torch.randn(3, *shape, dtype=torch.float64)
    before = snapshot(model)
    attr = ga.KernelSHAP(samples=120, feature_groups=groups, baseline=0.5)(model, x, 1)
    contribution = model[1].weight[1].detach().view(1, *shape) * (x - 0.5)       # w * (x - baseline)
    ids, d = feature_ids(groups, shape)
    per_group = torch.zeros(3, d, dtype=torch.float64).index_add_(1, ids.flatten(), contribution.flatten(1))
    assert attr.shape == x.shape
    assert_close_rel(attr, per_group[:, ids], 1e-6)             # each group's sum, on every element of it
    lime = ga.LIME(samples=120, feature_groups=groups, baseline=0.5, penalty=1e-9)(model, x, 1)
    assert_close_rel(lime, per_group[:, ids], 1e-6)             # LIME's z-space coefficients: the same sums
    assert_unchanged(model, before)


def test_kernelshap_with_fewer_samples_than_features_is_a_clear_error():
    model, x = linear_net((1, 4, 4)), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"KernelSHAP\(samples=16\) cannot fit 16 features.*samples must be > 16"):
        ga.KernelSHAP(samples=16)(model, x, 0)
    with pytest.raises(ValueError, match="fit of 17 samples on 16 features is singular"):
        ga.KernelSHAP(samples=17)(model, x, 0)                  # coalitions of rank < 16: was solved into noise
    assert ga.KernelSHAP(samples=16, penalty=1e-3)(model, x, 0).shape == x.shape
    assert ga.KernelSHAP(samples=16, feature_groups=2)(model, x, 0).shape == x.shape
    design = torch.randn(20, 3, dtype=torch.float64)
    design[:, 1] = 0                                            # a feature no sample moves
    with pytest.raises(ValueError, match="is singular .* raise samples"):
        ridge(design, torch.randn(1, 20, dtype=torch.float64), torch.ones(20, dtype=torch.float64), 0.0)


def test_heatmap_in_1d_and_3d():
    torch.manual_seed(12)
    signal, volume = torch.randn(2, 3, 10), torch.randn(2, 3, 4, 5, 6)
    assert torch.equal(heatmap(signal, spatial=1), signal.abs().sum(1))
    assert torch.equal(heatmap(signal, "l2", spatial=1), signal.norm(dim=1))
    assert torch.equal(heatmap(signal[:, 0]), signal[:, 0])                 # a [B, L] map is 1-D by itself
    assert torch.equal(heatmap(volume, "sum"), volume.sum(1))               # [B, C, D, H, W] is 3-D by itself
    assert torch.equal(heatmap(volume[:, 0], spatial=3), volume[:, 0])      # a layer map [B, D, H, W]
    assert torch.equal(heatmap(volume[:, 0], normalize=True, spatial=3), minmax(volume[:, 0]))
    assert heatmap(volume[:, 0]).shape == (2, 5, 6)                         # without spatial=3: images [B, C, H, W]
    with pytest.raises(ValueError, match="spatial must be None or"):
        heatmap(signal, spatial=4)
    with pytest.raises(ValueError, match=r"attr must have shape \[B, C, L\] or \[B, L\]"):
        heatmap(volume, spatial=1)


def test_signal_figure_draws_attribution_curves_under_the_signal():
    model, x = gap_net(1), inputs(1, batch=2)
    maps = {"Saliency": ga.Saliency()(model, x, 0), "GradCAM": ga.GradCAM("3")(model, x, 0),
            "zero": torch.zeros(2, x.shape[-1])}
    figure = grid_figure(x, maps, titles=["a", "b"], methods={"zero": ga.GradCAM("3")})
    axes = figure.axes
    assert len(axes) == (1 + len(maps)) * 2                     # rows: signal + methods; columns: examples
    grid = [axes[r * 2:(r + 1) * 2] for r in range(1 + len(maps))]
    for i in range(2):
        assert [a.get_title() for a in grid[0]] == ["a", "b"]
        signal_lines = grid[0][i].lines
        assert len(signal_lines) == 2                           # one line per channel
        assert torch.allclose(torch.as_tensor(signal_lines[1].get_ydata()).double(), x[i, 1].float().double())
        for row, (name, m) in zip(grid[1:], maps.items(), strict=True):
            curve = torch.as_tensor(row[i].lines[0].get_ydata()).double()
            assert torch.allclose(curve, heatmap(m.float(), normalize=True, spatial=1)[i].double()), name
    assert [" ".join(t.get_text().split()) for a in grid[3] for t in a.texts] == [CAM_ZERO_NOTE] * 2


@pytest.mark.parametrize("depth", [5, 20])
def test_volume_figure_draws_rows_of_depth_slices(depth):
    model = gap_net(3)
    torch.manual_seed(13)
    x = torch.rand(2, 2, depth, 6, 7, dtype=torch.float64)
    maps = {"Saliency": ga.Saliency()(model, x, 0), "GradCAM": ga.GradCAM("3")(model, x, 0)}
    figure = grid_figure(x, maps)
    slices = min(depth, MAX_SLICES)
    axes = figure.axes
    assert len(axes) == 2 * (1 + len(maps)) * slices            # per example: input row + one row per method
    depths = torch.linspace(0, depth - 1, slices).round().long().tolist()
    assert [a.get_title() for a in axes[:slices]] == [f"depth {z}" for z in depths]
    reduced = heatmap(maps["GradCAM"].float(), normalize=True, spatial=3)
    for i in range(2):
        row = (i * (1 + len(maps)) + 2) * slices                # example i's GradCAM row
        assert axes[row].get_ylabel() == "GradCAM"
        for k, z in enumerate(depths):
            shown = torch.as_tensor(axes[row + k].images[0].get_array())
            assert shown.shape == (6, 7) and torch.allclose(shown, reduced[i, z])
        picture = torch.as_tensor(axes[(i * (1 + len(maps))) * slices].images[0].get_array())
        assert torch.allclose(picture, x[i, :, 0].float().mean(0))  # two channels: drawn as their mean


def test_figure_refuses_inputs_without_spatial_axes():
    with pytest.raises(ValueError, match=r"images must be \[B, C, L\]"):
        grid_figure(torch.zeros(2, 5), {})
