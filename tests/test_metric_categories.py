"""Quantus's other categories (complexity, randomisation, axiomatic, robustness, region faithfulness) against
truths: analytic cases, Quantus 0.6.0 given the same draws (equal where its definition is right; where it is
not, a test runs it and shows what goes wrong), the controls, and the model left as found."""

import math
import warnings

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, import_quantus, snapshot
from nets import small_cnn
from torch import nn

import gradaudit as ga
from gradaudit import audit
from gradaudit.audit.axiomatic import shifted_copy
from gradaudit.audit.complexity import entropy, gini
from gradaudit.audit.metric_audit import DIRECTIONS, ROBUSTNESS
from gradaudit.audit.region_perturbation import grid_regions, region_curves, region_order
from gradaudit.audit.robustness import lipschitz_score, perturbed_scores, stability_score
from gradaudit.audit.sanity import cascade, cascade_maps, histogram_entropy, off_classes, smoothed_maps, ssim
from gradaudit.jobs.presets import METRIC_NAMES
from gradaudit.store import Store

COLUMNS = ("sparseness", "complexity", "mprt", "smprt", "emprt", "random_logit", "completeness", "input_invariance",
           "local_lipschitz", "relative_input_stability", "irof", "aopc")


def _quiet(metric, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(device="cpu", **kwargs)


def _images(n=4, channels=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, 8, 8, generator=generator), torch.tensor([0, 1, 2, 0, 1, 2][:n])


def _explainer(method):
    """A Quantus explain_func running one of ours (float32 numpy in and out)."""
    def explain(model, inputs, targets, **_):
        return method(model, torch.as_tensor(np.asarray(inputs), dtype=torch.float32),
                      torch.as_tensor(np.asarray(targets)).long()).detach().numpy()
    return explain


# complexity

def test_gini_and_entropy_of_known_maps():
    n = 64
    one_hot = torch.zeros(1, 8, 8)
    one_hot[0, 3, 5] = 2.0
    uniform, zero = torch.full((1, 8, 8), 0.3), torch.zeros(1, 8, 8)
    half = torch.cat([torch.ones(32), torch.zeros(32)]).view(1, 8, 8)
    assert gini(one_hot).item() == pytest.approx(1 - 1 / n, abs=1e-12)
    assert gini(uniform).item() == pytest.approx(0.0, abs=1e-12) and gini(zero).item() == 0.0
    assert gini(half).item() == pytest.approx(0.5, abs=1e-12)          # half the pixels hold everything
    assert entropy(uniform).item() == pytest.approx(math.log(n), abs=1e-12)
    assert entropy(zero).item() == pytest.approx(math.log(n), abs=1e-12)
    assert entropy(one_hot).item() == pytest.approx(0.0, abs=1e-12)
    assert entropy(half).item() == pytest.approx(math.log(32), abs=1e-12)


def test_sparseness_and_complexity_equalimport_quantus():
    quantus = import_quantus()
    x, y = _images()
    maps = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(1)) ** 3
    net = small_cnn()
    arguments = {"model": net, "x_batch": x.numpy(), "y_batch": y.numpy(), "a_batch": maps[:, None].numpy()}
    theirs_gini = _quiet(quantus.Sparseness(disable_warnings=True), **arguments)
    theirs_entropy = _quiet(quantus.Complexity(disable_warnings=True), **arguments)
    ours_gini = audit.sparseness({"m": maps}, net, (x, y)).rows[0]["sparseness_each"]
    ours_entropy = audit.complexity({"m": maps}, net, (x, y)).rows[0]["complexity_each"]
    assert np.allclose(ours_gini, theirs_gini, atol=1e-6, rtol=0)       # Quantus's 1e-7 offset moves it ~1e-7
    assert np.allclose(ours_entropy, theirs_entropy, atol=1e-6, rtol=0)      # Quantus divides in float32
    assert not np.allclose(ours_gini, theirs_gini, atol=1e-12, rtol=0)   # the offset is there


# randomisation

def test_cascade_copies_the_model_and_leaves_the_callers_random_state_alone():
    net = small_cnn()
    before, state = snapshot(net), torch.get_rng_state()
    steps = [(name, {k: v.clone() for k, v in copy.state_dict().items()}) for name, copy in cascade(net, seed=3)]
    assert [name for name, _ in steps] == ["6", "3", "0"]
    trained = net.state_dict()
    last = steps[-1][1]
    assert all(not torch.equal(last[k], trained[k]) for k in trained)              # every layer re-initialised
    assert torch.equal(steps[0][1]["0.weight"], trained["0.weight"])               # the top layer went first
    assert torch.equal(torch.get_rng_state(), state)
    assert_unchanged(net, before)
    bottom_up = [name for name, _ in cascade(net, "bottom_up")]
    assert bottom_up == ["0", "3", "6"]


def test_mprt_equals_quantus_layer_by_layer_and_quantus_averages_in_the_unrandomised_model():
    quantus = import_quantus()
    x, y = _images()
    net = small_cnn()
    method = ga.Saliency()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.MPRT(layer_order="top_down", seed=4, disable_warnings=True)   # seeds 4 + 1
        theirs = metric(model=net, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=_explainer(method),
                        device="cpu")
        averaged = quantus.MPRT(layer_order="top_down", seed=4, return_average_correlation=True,
                                disable_warnings=True)(model=net, x_batch=x.numpy(), y_batch=y.numpy(),
                                                       explain_func=_explainer(method), device="cpu")
    layers, original, maps = cascade_maps(lambda m: method(m, x, y).abs()[:, 0], net, "top_down", seed=5)
    assert list(theirs) == ["original", *layers]
    ours = torch.stack([audit.common.spearman(original, m) for m in maps])
    for i, layer in enumerate(layers):
        assert np.allclose(ours[i].numpy(), theirs[layer], atol=1e-9)
    row = audit.mprt({"Saliency": method}, net, (x, y), seed=5).rows[0]
    assert np.allclose(row["mprt_each"], theirs[layers[-1]], atol=1e-9)
    assert np.allclose(row["spearman_by_layer"], ours.mean(1).numpy(), atol=1e-12)
    # Quantus's average keeps the original model's self-correlation (1.0) among the layers:
    assert np.allclose(averaged, (1 + ours.sum(0).numpy()) / (len(layers) + 1), atol=1e-9)
    assert not np.allclose(averaged, ours.mean(0).numpy(), atol=1e-3)


def test_smprt_equals_quantus_given_the_same_noise(monkeypatch):
    quantus = import_quantus()
    x, y = _images(3)
    net = small_cnn()
    samples = 4
    draws = torch.randn(samples - 1, *x.shape, generator=torch.Generator().manual_seed(2)).float()
    calls = []

    def randn(*shape):                       # Quantus draws one block per noisy copy, in order, for every model
        assert shape == tuple(x.shape)
        calls.append(1)
        return draws[(len(calls) - 1) % (samples - 1)].double().numpy()

    monkeypatch.setattr(np.random, "randn", randn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.SmoothMPRT(layer_order="bottom_up", seed=0, nr_samples=samples, noise_magnitude=0.1,
                                    skip_layers=True, return_last_correlation=True, disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=quantus.explain,
            explain_func_kwargs={"method": "Gradient"}, device="cpu")
    monkeypatch.undo()
    scale = 0.1 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    eps = [(draws[k].double() * scale).float() for k in range(samples - 1)]
    method = ga.Saliency(abs=False)                                         # Quantus's "Gradient": signed
    _, original, maps = cascade_maps(lambda m: smoothed_maps(method, m, x, y, eps, "g"), net, "bottom_up", seed=1,
                                     last_only=True)
    ours = audit.common.spearman(original, maps[-1])
    assert np.allclose(ours.numpy(), theirs, atol=1e-6)
    # the smoothed map is the mean of the method's maps over the copies and x itself
    by_hand = sum(method(net, x + e, y) for e in [*eps, torch.zeros_like(x)]).abs()[:, 0] / samples
    assert torch.allclose(smoothed_maps(method, net, x, y, eps, "g"), by_hand, atol=1e-6)


def test_emprt_equalsimport_quantus():
    quantus = import_quantus()
    x, y = _images()
    net = small_cnn()
    method = ga.Saliency(abs=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.EfficientMPRT(layer_order="bottom_up", seed=6, disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=_explainer(method), device="cpu")
    row = audit.emprt({"g": method}, net, (x, y), seed=7).rows[0]
    assert np.allclose(row["emprt_each"], theirs, atol=1e-9)
    assert histogram_entropy(torch.zeros(1, 8, 8)).item() == 0.0
    # a map constant on the trained model (a zero gradient) has no relative rise: 0, the controls' score
    assert audit.emprt({"Zero": ga.Saliency(abs=False)}, _zero_net(), (x, y)).rows[0]["emprt_each"] == [0.0] * 4
    assert histogram_entropy(torch.arange(100.0).view(1, 10, 10)).item() == pytest.approx(math.log(100))


def test_ssim_equals_skimage_and_quantus_random_logit_is_a_one_dimensional_ssim():
    from skimage.metrics import structural_similarity
    quantus = import_quantus()
    x, y = _images()
    net = small_cnn()
    generator = torch.Generator().manual_seed(3)
    a, b = torch.rand(4, 8, 8, generator=generator), torch.rand(4, 8, 8, generator=generator)
    for i in range(4):
        span = float(max(a[i].max(), b[i].max()) - min(a[i].min(), b[i].min()))
        assert ssim(a[i:i + 1], b[i:i + 1]).item() == pytest.approx(
            structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=span), abs=1e-9)
    assert ssim(a, a).tolist() == pytest.approx([1.0] * 4)

    def normalised(model, inputs, targets):                    # |gradient| over its maximum, as ours compares
        maps = ga.Saliency()(model, inputs, targets)
        return maps / maps.flatten(1).amax(1).view(-1, 1, 1, 1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.RandomLogit(num_classes=3, seed=9, normalise=False, disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=_explainer(normalised), device="cpu")
    others = off_classes(y, 3, seed=9)
    assert (others != y).all()
    same, other = normalised(net, x, y)[:, 0], normalised(net, x, others)[:, 0]
    assert np.allclose(ssim(same.flatten(1), other.flatten(1)).numpy(), theirs, atol=1e-6)   # 1-D, raster order
    row = audit.random_logit({"Saliency": ga.Saliency()}, net, (x, y), seed=9).rows[0]
    assert np.allclose(row["random_logit_each"], ssim(same, other).numpy(), atol=1e-6)      # 2-D, Sixt's
    assert not np.allclose(row["random_logit_each"], theirs, atol=1e-2)


def test_off_classes_are_uniform_over_the_other_classes():
    classes = torch.tensor([2] * 6000)
    others = off_classes(classes, 4, seed=0)
    counts = torch.bincount(others, minlength=4)
    assert counts[2] == 0 and (counts[[0, 1, 3]] - 2000).abs().max() < 150


# axiomatic

def _linear_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()


def test_completeness_of_integrated_gradients_is_near_zero_and_quantus_compares_floats_exactly():
    quantus = import_quantus()
    x, y = _images()
    net = small_cnn()
    rows = {r["method"]: r for r in audit.completeness(
        {"IG": ga.IntegratedGradients(steps=256), "Saliency": ga.Saliency(), "Random": ga.Random()}, net,
        (x, y)).rows}
    assert rows["IG"]["completeness"] < 1e-4 < rows["Saliency"]["completeness"] < rows["Random"]["completeness"]
    linear = _linear_net()                                                   # IxG is exact for a linear model
    assert audit.completeness({"IxG": ga.InputXGradient()}, linear, (x, y)).rows[0]["completeness"] < 1e-5
    maps = ga.IntegratedGradients(steps=256)(net, x, y).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.Completeness(perturb_baseline=0.0, normalise=False, disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(), device="cpu")
    assert list(theirs) == [False] * 4               # a gap below 1e-4 is still "incomplete" under float equality


def test_input_invariance_gradients_pass_and_gradient_times_input_fails_as_kindermans_and_quantus_say():
    quantus = import_quantus()
    x, y = _images()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()  # no padding
    before = snapshot(net)
    methods = {"Saliency": ga.Saliency(), "IxG": ga.InputXGradient(), "IG": ga.IntegratedGradients(steps=16),
               "Random": ga.Random(), "Sobel": ga.Sobel()}
    rows = {r["method"]: r for r in audit.input_invariance(methods, net, (x, y)).rows}
    assert rows["Saliency"]["input_invariance_each"] == [1.0] * 4
    assert rows["IxG"]["input_invariance_each"] == [0.0] * 4 and rows["IG"]["input_invariance_each"] == [0.0] * 4
    assert rows["Random"]["input_invariance"] == rows["Sobel"]["input_invariance"] == 1.0

    def shift_all(arr, input_shift, **_):                      # what Quantus's shift should do to each image
        return arr + input_shift

    for name in ("Saliency", "IxG"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fixed = quantus.InputInvariance(perturb_func=shift_all, disable_warnings=True)(
                model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=methods[name](net, x, y).detach().numpy(),
                explain_func=_explainer(methods[name]), device="cpu")
        assert [float(v) for v in fixed] == rows[name]["input_invariance_each"]
    # As shipped, Quantus passes each image's indices[1:] to its shift, so the first element is never shifted:
    from quantus.functions.perturb_func import baseline_replacement_by_shift, perturb_batch
    shifted = perturb_batch(baseline_replacement_by_shift, x.numpy(), np.tile(np.arange(64), (4, 1)),
                            indexed_axes=np.arange(3), input_shift=-1)
    assert np.array_equal(shifted.reshape(4, -1)[:, 0], x.numpy().reshape(4, -1)[:, 0])
    assert np.allclose(shifted.reshape(4, -1)[:, 1:], x.numpy().reshape(4, -1)[:, 1:] - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shipped = quantus.InputInvariance(disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=methods["Saliency"](net, x, y).detach().numpy(),
            explain_func=_explainer(methods["Saliency"]), device="cpu")
    assert not all(shipped)                                    # here the unshifted corner fails the gradient
    assert_unchanged(net, before)


def test_a_padded_first_layer_absorbs_the_shift_here_and_not_inimport_quantus():
    quantus = import_quantus()
    x, y = _images()
    net = small_cnn()                                            # first conv zero-pads by 1
    before = snapshot(net)
    ours = shifted_copy(net, x, -1.0)
    with torch.no_grad():
        assert torch.allclose(ours(x - 1.0), net(x), atol=1e-5)
    from quantus.helpers.model.pytorch_model import PyTorchModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = PyTorchModel(net, channel_first=True, softmax=False, device="cpu").add_mean_shift_to_first_layer(
            -1.0, tuple(x[:1].shape))
        with torch.no_grad():
            assert (theirs(x - 1.0) - net(x)).abs().max() > 1e-2       # the borders see 0, not the shift
        shipped = quantus.InputInvariance(disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=ga.Saliency()(net, x, y).detach().numpy(),
            explain_func=_explainer(ga.Saliency()), device="cpu")
    assert not any(shipped)                                      # so even the gradient "fails" there
    assert audit.input_invariance(ga.Saliency(), net, (x, y)).rows[0]["input_invariance_each"] == [1.0] * 4
    assert_unchanged(net, before)


def test_input_invariance_refuses_a_shift_the_first_layer_cannot_absorb():
    x, y = _images()
    torch.manual_seed(0)
    normalised = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 3)).eval()
    normalised[0].running_var.fill_(4.0)
    with pytest.raises(ValueError, match="does not absorb a shift"):
        audit.input_invariance(ga.Saliency(), normalised, (x, y))


# robustness

def _noise(x, samples, seed=4, radius=0.05):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(len(x), samples, *x.shape[1:], generator=generator) * 2 - 1) * radius


def _replay(d):
    """A Quantus perturb_func giving x + d[:, s] at its s-th call (it perturbs once per sample, in order)."""
    calls = []

    def perturb(arr, indices=None, **_):
        calls.append(1)
        return arr + d[:, (len(calls) - 1) % d.shape[1]].flatten(1).numpy()
    return perturb


@pytest.mark.parametrize("name", ["lipschitz", "ris"])
def test_local_lipschitz_and_relative_input_stability_equal_quantus_given_the_same_perturbations(name):
    quantus = import_quantus()
    x, y = _images()
    net = small_cnn()
    samples, method = 5, ga.Saliency(abs=False)
    d = _noise(x, samples)
    score = lipschitz_score if name == "lipschitz" else stability_score
    ours = perturbed_scores(method, net, x, y, lambda e: d[e], samples, score)
    kind = quantus.LocalLipschitzEstimate if name == "lipschitz" else quantus.RelativeInputStability
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = kind(nr_samples=samples, perturb_func=_replay(d), normalise=False, abs=False,
                      disable_warnings=True)(model=net, x_batch=x.numpy(), y_batch=y.numpy(),
                                             a_batch=method(net, x, y).detach().numpy(),
                                             explain_func=_explainer(method), device="cpu")
    assert np.isfinite(theirs).all()
    assert np.allclose(ours.numpy(), theirs, rtol=1e-5, atol=0)


def test_quantus_relative_input_stability_is_nan_when_one_copy_changes_the_prediction():
    quantus = import_quantus()
    x, y = _images()
    net = small_cnn()
    samples, method = 4, ga.Saliency(abs=False)
    d = _noise(x, samples)
    with torch.no_grad():
        predicted = net(x).argmax(1)
        for shift in torch.linspace(-3, 3, 61):                  # find a copy of image 0 the model calls otherwise
            if net(x[:1] + shift).argmax(1) != predicted[0]:
                break
    d[0, 1] = shift
    with torch.no_grad():
        assert net(x[:1] + d[0, 1]).argmax(1) != predicted[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.RelativeInputStability(nr_samples=samples, perturb_func=_replay(d), disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=method(net, x, y).detach().numpy(),
            explain_func=_explainer(method), device="cpu")
    ours = perturbed_scores(method, net, x, y, lambda e: d[e], samples, stability_score)
    assert np.isnan(theirs[0]) and np.isfinite(ours[0].item())
    # the maximum leaves out exactly the copies that change the prediction, and x itself (0) is the floor
    a, x1 = torch.ones(1, 4), torch.ones(1, 4)
    moved_a = torch.tensor([[[3.0] * 4, [2.0] * 4]])                   # relative changes 2 and 1
    moved_x = torch.full((1, 2, 4), 1.5)
    assert stability_score(x1, moved_x, a, moved_a, torch.tensor([[True, True]])).item() == pytest.approx(4.0)
    assert stability_score(x1, moved_x, a, moved_a, torch.tensor([[False, True]])).item() == pytest.approx(2.0)
    assert stability_score(x1, moved_x, a, moved_a, torch.tensor([[False, False]])).item() == 0.0
    kept = torch.tensor([0, 2, 3])                                # the copies that keep the prediction
    alone = perturbed_scores(method, net, x[:1], y[:1], lambda e: d[:1, kept][e], 3, stability_score)
    assert ours[0].item() == pytest.approx(alone.item(), rel=1e-9)


def test_lipschitz_of_a_linear_models_gradient_is_zero_and_of_gradient_times_input_the_weight_norm():
    x, y = _images()
    net = _linear_net()
    rows = {r["method"]: r for r in audit.local_lipschitz(
        {"g": ga.Saliency(abs=False), "IxG": ga.InputXGradient()}, net, (x, y), samples=6).rows}
    assert rows["g"]["local_lipschitz"] == pytest.approx(0.0, abs=1e-9)
    # IxG = x * w: ||(x - x') * w|| / ||x - x'|| is at most max |w| (the class's weights)
    assert 0 < rows["IxG"]["local_lipschitz"] <= net[1].weight[y].abs().amax().item() + 1e-6


# region faithfulness

def test_region_perturbation_aopc_equals_quantus_curve_summed_over_l_plus_one():
    quantus = import_quantus()
    x, y = _images()
    net = small_cnn()
    maps = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.RegionPerturbation(patch_size=4, regions_evaluation=4, perturb_baseline=0.0,
                                            disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    row = audit.region_perturbation({"m": maps}, net, (x, y), patch=4, baseline=0.0).rows[0]
    assert row["regions"] == 4
    assert np.allclose(row["aopc_each"], np.asarray(theirs).sum(1) / 5, atol=1e-6)


def test_irof_equals_quantus_given_its_slic_segments_up_to_its_off_by_one_area(monkeypatch):
    from skimage.segmentation import slic
    quantus = import_quantus()
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)   # Quantus 0.6.0 calls np.trapz, gone in NumPy 2.4
    x, y = _images()
    net = small_cnn()
    maps = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(6))
    segments = torch.from_numpy(np.stack([slic(np.moveaxis(i, 0, -1).astype("double"), start_label=0)
                                          for i in x.numpy()]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(quantus.IROF(perturb_baseline=0.0, return_aggregate=False, disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu"))
    ours = np.asarray(audit.irof({"m": maps}, net, (x, y), segments=segments, baseline=0.0).rows[0]["irof_each"])
    step, count = region_order(maps, segments, "mean")
    curves = region_curves(net, x, step, torch.zeros_like(x), y, int(count.max()))
    c = (curves / curves[:, :1]).numpy()
    length = count.double().numpy()
    assert np.allclose(ours, 1 - (c.sum(1) - c[:, 0] / 2 - c[:, -1] / 2) / length, atol=1e-9)
    assert np.allclose(theirs, length * ours + (1 + c[:, 1]) / 2, atol=1e-5)     # Quantus = L IROF + (1 + c_1) / 2


def test_irof_and_aopc_of_a_model_blind_to_the_removals_are_zero():
    x, y = _images()
    torch.manual_seed(0)
    blind = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    with torch.no_grad():
        blind[1].weight.zero_()
        blind[1].bias.copy_(torch.tensor([1.0, -1.0, 0.5]))
    maps = torch.rand(4, 8, 8)
    assert audit.irof({"m": maps}, blind, (x, y)).rows[0]["irof_each"] == pytest.approx([0.0] * 4, abs=1e-12)
    assert audit.region_perturbation({"m": maps}, blind, (x, y)).rows[0]["aopc_each"] == pytest.approx(
        [0.0] * 4, abs=1e-12)
    assert grid_regions(5, 5, 2).tolist()[4] == [6, 6, 7, 7, 8]            # edge cells cut short


# every category: controls, the model left as found, the metric audit's directions

def test_every_metric_keeps_the_model_and_scores_the_controls_as_the_metric_audit_expects():
    x, y = _images(3)
    net = small_cnn()
    before, state = snapshot(net), torch.get_rng_state()
    methods = {"Saliency": ga.Saliency(), "Random": ga.Random(), "Sobel": ga.Sobel()}
    results = [audit.sparseness(methods, net, (x, y)), audit.complexity(methods, net, (x, y)),
               audit.mprt(methods, net, (x, y)), audit.smprt(methods, net, (x, y), samples=2),
               audit.emprt(methods, net, (x, y)), audit.random_logit(methods, net, (x, y)),
               audit.completeness(methods, net, (x, y)), audit.input_invariance(methods, net, (x, y)),
               audit.local_lipschitz(methods, net, (x, y), samples=2),
               audit.relative_input_stability(methods, net, (x, y), samples=2),
               audit.irof(methods, net, (x, y)), audit.region_perturbation(methods, net, (x, y))]
    assert_unchanged(net, before)
    assert torch.equal(torch.get_rng_state(), state)
    rows = {column: {r["method"]: r for r in result.rows} for column, result in zip(COLUMNS, results, strict=True)}
    # maps blind to the model: identical after randomisation and for any class
    for control in ("Random", "Sobel"):
        assert rows["mprt"][control]["mprt_each"] == pytest.approx([1.0] * 3)
        assert rows["smprt"][control]["smprt_each"] == pytest.approx([1.0] * 3)
        assert rows["emprt"][control]["emprt_each"] == pytest.approx([0.0] * 3)
        assert rows["random_logit"][control]["random_logit_each"] == pytest.approx([1.0] * 3)
        assert rows["input_invariance"][control]["input_invariance"] == 1.0
    assert rows["mprt"]["Saliency"]["mprt"] < 0.9 and rows["random_logit"]["Saliency"]["random_logit"] < 0.9
    assert set(COLUMNS) <= set(DIRECTIONS)
    assert {"local_lipschitz", "relative_input_stability", "input_invariance"} <= ROBUSTNESS
    audited = audit.metric_audit(results, resamples=50)
    assert {row["column"] for row in audited.rows} == set(COLUMNS)
    flagged = {row["column"] for row in audited.rows if row["flagged"]}
    assert not flagged & {"mprt", "random_logit"}                         # both controls rank last there


def test_evaluate_names_every_category():
    assert {"sparseness", "complexity", "mprt", "smprt", "emprt", "random_logit", "completeness",
            "input_invariance", "lipschitz", "ris", "irof", "aopc"} <= set(METRIC_NAMES)


def test_bad_arguments_are_refused_with_the_argument_named():
    x, y = _images()
    net = small_cnn()
    with pytest.raises(ValueError, match="order must be one of"):
        audit.mprt(ga.Saliency(), net, (x, y), order="sideways")
    with pytest.raises(ValueError, match="order must be 'top_down' or 'bottom_up'"):
        audit.emprt(ga.Saliency(), net, (x, y), order="independent")
    with pytest.raises(ValueError, match="precomputed maps cannot be used"):
        audit.mprt({"m": torch.rand(4, 8, 8)}, net, (x, y))
    with pytest.raises(ValueError, match="radius must be a positive number"):
        audit.local_lipschitz(ga.Saliency(), net, (x, y), radius=0)
    with pytest.raises(ValueError, match="baseline must be a number"):
        audit.completeness(ga.Saliency(), net, (x, y), baseline="black")
    with pytest.raises(ValueError, match="patch must be a side in pixels"):
        audit.region_perturbation(ga.Saliency(), net, (x, y), patch=0)
    with pytest.raises(ValueError, match="segments must be an integer tensor"):
        audit.irof(ga.Saliency(), net, (x, y), segments=torch.rand(4, 8, 8))


def _zero_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(128, 3)).eval()
    with torch.no_grad():
        net[2].weight.zero_()
    return net


NEW_AUDITS = {             # one per module: the others of a module share its path through audit/common.py
    "sparseness": lambda net, d, **k: audit.sparseness(ga.Saliency(), net, d, **k),
    "mprt": lambda net, d, **k: audit.mprt(ga.Saliency(), net, d, **k),
    "input_invariance": lambda net, d, **k: audit.input_invariance(ga.Saliency(), net, d, **k),
    "local_lipschitz": lambda net, d, **k: audit.local_lipschitz(ga.Saliency(), net, d, samples=2, **k),
    "irof": lambda net, d, **k: audit.irof(ga.Saliency(), net, d, **k),
}


def test_rows_are_keyed_by_limit_and_model_and_served_again(tmp_path):
    """Each new audit through audit/common.py: limit=2 then limit=3 into one store gives rows of their own, a
    rerun is served (equal row, nothing added), and a model of other weights under the same name gets its own."""
    store = Store(tmp_path / "results.sqlite")
    x, y = _images(3)
    net, other = small_cnn(), small_cnn()
    with torch.no_grad():
        other[0].weight.add_(0.5)
    for name, run in NEW_AUDITS.items():
        assert run(net, (x, y), limit=2, store=store).rows[0]["images"] == 2, name
        wider = run(net, (x, y), limit=3, store=store).rows[0]
        stored = len(store.rows(name))
        assert wider["images"] == 3 and run(net, (x, y), limit=3, store=store).rows[0] == wider, name
        assert len(store.rows(name)) == stored == 2, name
        run(other, (x, y), limit=3, store=store)
        assert len(store.rows(name)) == 3, name
    store.close()
