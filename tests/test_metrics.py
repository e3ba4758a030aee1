"""Metrics without retraining against truths: RISE's CausalMetric written out as loops, a linear model's
true contributions, TorchRay's pointing rule at its tolerance boundary, masks holding known shares."""

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from nets import small_cnn
from scipy.ndimage import gaussian_filter
from torch import nn

import gradaudit as ga
from gradaudit import audit
from gradaudit.audit.metrics import infidelity_scores, rise_blur, square_perturbations
from gradaudit.store import Store


def _rise_blur(img):
    """RISE's ``gkern(11, 5)`` and ``blur``: a full C x C kernel with the Gaussian on its diagonal."""
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    k = gaussian_filter(delta, 5)
    channels = img.shape[1]
    kern = np.zeros((channels, channels, 11, 11))
    for c in range(channels):
        kern[c, c] = k
    return nn.functional.conv2d(img, torch.from_numpy(kern.astype("float32")), padding=5)


def _rise_single_run(model, img, explanation, mode, step):
    """RISE's ``CausalMetric.single_run`` with plain loops: scores of the clean image's top class (softmax)."""
    _, channels, height, width = img.shape
    pixels = height * width
    n_steps = (pixels + step - 1) // step
    with torch.no_grad():
        c = int(model(img).argmax(1))
        start = img.clone() if mode == "del" else _rise_blur(img)
        finish = torch.zeros_like(img) if mode == "del" else img.clone()
        order = np.flip(np.argsort(explanation.reshape(-1, pixels), axis=1), axis=-1)[0]
        scores = np.empty(n_steps + 1)
        for i in range(n_steps + 1):
            scores[i] = float(torch.softmax(model(start), 1)[0, c])
            if i < n_steps:
                for p in order[step * i:step * (i + 1)]:
                    for ch in range(channels):
                        start[0, ch, p // width, p % width] = finish[0, ch, p // width, p % width]
    return scores


def _rise_auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def test_blur_is_rises_gaussian_kernel_with_zero_padding():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rise_blur(x), _rise_blur(x), atol=1e-6)


@pytest.mark.parametrize("step", [5, 64])
def test_insertion_deletion_equals_rises_causal_metric(step):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(5, 3, 8, 8, generator=generator)
    y = torch.zeros(5, dtype=torch.long)
    maps = torch.rand(5, 8, 8, generator=generator)              # continuous: no ties
    net = small_cnn(classes=3, channels=3)
    row = audit.insertion_deletion({"map": maps}, net, (x, y), step=step).rows[0]
    curves = {mode: np.array([_rise_single_run(net, x[i:i + 1], maps[i].numpy(), mode, step) for i in range(5)])
              for mode in ("ins", "del")}
    n = math.ceil(64 / step)
    assert len(row["insertion_curve"]) == len(row["fractions"]) == n + 1
    assert row["fractions"][0] == 0 and row["fractions"][-1] == 1
    assert np.allclose(row["insertion_curve"], curves["ins"].mean(0), atol=1e-6)
    assert np.allclose(row["deletion_curve"], curves["del"].mean(0), atol=1e-6)
    assert row["insertion"] == pytest.approx(np.mean([_rise_auc(c) for c in curves["ins"]]), abs=1e-6)
    assert row["deletion"] == pytest.approx(np.mean([_rise_auc(c) for c in curves["del"]]), abs=1e-6)
    assert row["step"] == step and row["images"] == 5 and row["insertion_n"] == 5


def test_true_contributions_of_a_linear_model_beat_random_on_both_curves():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(24, 3, 8, 8, generator=generator)
    y = torch.zeros(24, dtype=torch.long)
    with torch.no_grad():
        c = net(x).argmax(1)
    w = net[1].weight.detach().view(2, 3, 8, 8)
    # p(c) rises with logit_c - logit_other; a pixel's share of it (from the zero substrate) is its contribution.
    truth = ((w[c] - w[1 - c]) * x).sum(1)
    result = audit.insertion_deletion({"truth": truth, "Random": ga.Random()}, net, (x, y), substrate=0.0)
    rows = {row["method"]: row for row in result.rows}
    assert rows["truth"]["deletion_high"] < rows["Random"]["deletion_low"]
    assert rows["truth"]["insertion_low"] > rows["Random"]["insertion_high"]
    assert rows["truth"]["difference"] - rows["Random"]["difference"] > 0.2


def test_insertion_deletion_rejects_bad_arguments():
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    net = small_cnn()
    with pytest.raises(ValueError, match="substrate must be"):
        audit.insertion_deletion({"m": torch.rand(2, 8, 8)}, net, (x, y), substrate="noise")
    with pytest.raises(ValueError, match=r"precomputed maps must have shape \[N, H, W\]"):
        audit.insertion_deletion({"m": torch.rand(1, 8, 8)}, net, (x, y))
    with pytest.raises(ValueError, match="step must be"):
        audit.insertion_deletion({"m": torch.rand(2, 8, 8)}, net, (x, y), step=0)


def test_rows_are_stored_at_once_and_read_back(tmp_path, monkeypatch):
    x, y = torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    net, maps = small_cnn(), torch.rand(3, 8, 8)
    store = Store(tmp_path / "results.sqlite")
    first = audit.insertion_deletion({"m": maps}, net, (x, y), store=store).rows
    calls = []
    monkeypatch.setattr("gradaudit.audit.metrics.causal_curves", lambda *a, **k: calls.append(a))
    again = audit.insertion_deletion({"m": maps.clone()}, net, (x.clone(), y), store=store).rows
    assert again == first and not calls and len(store.rows("insertion_deletion")) == 1
    store.close()


def _point_at(points, size=40):
    maps = torch.zeros(len(points), size, size)
    for i, (r, c) in enumerate(points):
        maps[i, r, c] = 1
    return maps


def test_pointing_game_tolerance_is_strict_and_euclidean():
    masks = torch.zeros(4, 40, 40, dtype=torch.bool)
    masks[:2, 20, 20] = True
    masks[2:, 0, 0] = True
    # distances 15, 14, 15 (9-12-15 diagonal), 14.87 (sqrt(10^2 + 11^2))
    maps = _point_at([(20, 5), (20, 6), (9, 12), (10, 11)])
    x, y = torch.rand(4, 1, 40, 40), torch.zeros(4, dtype=torch.long)
    row = audit.pointing_game({"m": maps}, None, (x, y), masks=masks).rows[0]
    assert row["hit_rate"] == 0.5 and row["accuracy"] == 0.5
    wider = audit.pointing_game({"m": maps}, None, (x, y), masks=masks, tolerance=16).rows[0]
    assert wider["accuracy"] == 1.0
    hits = [audit.pointing_game({"m": maps[i:i + 1]}, None, (x[i:i + 1], y[:1]), masks=masks[i:i + 1]).rows[0]
            ["accuracy"] for i in range(4)]
    assert hits == [0.0, 1.0, 0.0, 1.0]


def test_pointing_game_constant_map_misses_and_first_maximum_points():
    masks = torch.zeros(3, 40, 40, dtype=torch.bool)
    masks[0] = True                                              # a constant map misses even a full mask
    masks[1:, 0, 0] = True
    maps = torch.zeros(3, 40, 40)
    maps[1, 0, 1] = maps[1, 39, 39] = 1                          # first maximum near the mask: hit
    maps[2, 39, 38] = maps[2, 39, 39] = 1                        # both maxima far: miss
    x, y = torch.rand(3, 1, 40, 40), torch.zeros(3, dtype=torch.long)
    hits = [audit.pointing_game({"m": maps[i:i + 1]}, None, (x[i:i + 1], y[:1]), masks=masks[i:i + 1]).rows[0]
            ["accuracy"] for i in range(3)]
    assert hits == [0.0, 1.0, 0.0]


def test_pointing_game_accuracy_is_the_mean_over_classes():
    masks = torch.zeros(4, 40, 40, dtype=torch.bool)
    masks[:, 20, 20] = True
    maps = _point_at([(20, 20), (20, 20), (0, 0), (0, 0)])     # class 0: 1 of 1 hit; class 1: 1 of 3
    x, y = torch.rand(4, 1, 40, 40), torch.tensor([0, 1, 1, 1])
    row = audit.pointing_game({"m": maps}, None, (x, y), masks=masks).rows[0]
    assert row["class_accuracy"] == {"0": 1.0, "1": pytest.approx(1 / 3)}
    assert row["accuracy"] == pytest.approx(2 / 3) and row["hit_rate"] == 0.5


def test_pointing_game_reads_signal_mask_and_names_missing_or_bad_masks():
    x, y = torch.rand(2, 1, 40, 40), torch.zeros(2, dtype=torch.long)
    mask = torch.zeros(2, 1, 40, 40, dtype=torch.bool)
    mask[:, :, 20, 20] = True
    blocks = type("Blocks", (), {"x": x, "y": y, "signal_mask": mask})()
    maps = _point_at([(20, 20), (0, 0)])
    assert audit.pointing_game({"m": maps}, None, blocks).rows[0]["hit_rate"] == 0.5
    with pytest.raises(ValueError, match="needs ground-truth masks"):
        audit.pointing_game({"m": maps}, None, (x, y))
    with pytest.raises(ValueError, match=r"masks of shape \[N, H, W\] = \[2, 40, 40\]"):
        audit.pointing_game({"m": maps}, None, (x, y), masks=torch.ones(2, 20, 20, dtype=torch.bool))


@pytest.mark.parametrize(("inside", "expected"), [("all", 1.0), ("none", 0.0), ("half", 0.5)])
def test_relevance_mass_and_rank_on_masks_holding_known_shares(inside, expected):
    relevance = torch.zeros(1, 8, 8)
    relevance[0, :, :4] = torch.rand(8, 4) + 0.5                   # all positive relevance in the left half
    relevance[0, :, 4:] = -3.0                                       # negative relevance is pooled away
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    if inside == "all":
        masks[0, :, :4] = True
    elif inside == "none":
        masks[0, :, 4:] = True
    else:                                                          # half the relevance and half the top-K
        relevance[0, :, :4] = 1.0
        masks[0, :4, :] = True
    x, y = torch.rand(1, 1, 8, 8), torch.zeros(1, dtype=torch.long)
    mass = audit.relevance_mass({"m": relevance}, None, (x, y), masks=masks).rows[0]["relevance_mass"]
    rank = audit.relevance_rank({"m": relevance}, None, (x, y), masks=masks).rows[0]["relevance_rank"]
    assert mass == pytest.approx(expected)
    assert rank == pytest.approx(expected)


def test_relevance_mass_pools_a_methods_positive_relevance_over_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    x, y = torch.rand(4, 3, 8, 8) - 0.5, torch.tensor([0, 1, 0, 1])
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 1:5] = True
    attribution = ga.InputXGradient()(net, x, y)
    positive = attribution.clamp(min=0).sum(1)
    expected = ((positive * masks).flatten(1).sum(1) / positive.flatten(1).sum(1)).mean()
    row = audit.relevance_mass({"IxG": ga.InputXGradient()}, net, (x, y), masks=masks).rows[0]
    assert row["relevance_mass"] == pytest.approx(expected.item(), abs=1e-6)
    absolute = attribution.abs().sum(1)
    expected = ((absolute * masks).flatten(1).sum(1) / absolute.flatten(1).sum(1)).mean()
    row = audit.relevance_mass({"IxG": ga.InputXGradient()}, net, (x, y), masks=masks, pool="absolute").rows[0]
    assert row["relevance_mass"] == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="pool must be one of positive, absolute"):
        audit.relevance_mass({"IxG": ga.InputXGradient()}, net, (x, y), masks=masks, pool="max")


def test_every_new_metric_plots_its_rows_and_averaged_seeds():
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    masks[:, :4] = True
    net = small_cnn()
    methods = {"Saliency": ga.Saliency(), "Random": ga.Random()}
    results = [audit.insertion_deletion(methods, net, (x, y), step=16),
               audit.pointing_game(methods, net, (x, y), masks=masks, tolerance=2),
               audit.relevance_mass(methods, net, (x, y), masks=masks),
               audit.relevance_rank(methods, net, (x, y), masks=masks)]
    for result in results:
        assert isinstance(result.plot(), Figure)
        seeds = [{**row, "model": f"net/{seed}"} for seed in (0, 1) for row in result.rows]
        assert isinstance(type(result)(result.audit, seeds).plot(), Figure)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captums_given_the_same_perturbations(normalize):
    from captum.metrics import infidelity as captum_infidelity

    generator = torch.Generator().manual_seed(3)
    x = torch.rand(4, 2, 8, 8, generator=generator)
    samples = 6
    changes = torch.rand(4, samples, 2, 8, 8, generator=generator) * (torch.rand(4, samples, 1, 8, 8,
                                                                                  generator=generator) < 0.3)
    net = small_cnn(classes=3, channels=2)
    with torch.no_grad():
        classes = net(x).argmax(1)
    attributions = ga.Saliency(abs=False)(net, x, classes)

    def captum_perturbation(inputs):                 # Captum repeats each example `samples` times in a row
        assert torch.equal(inputs, x.repeat_interleave(samples, 0))
        change = changes.flatten(0, 1)
        return change, inputs - change

    theirs = captum_infidelity(net, captum_perturbation, x, attributions, target=classes, n_perturb_samples=samples,
                               normalize=normalize).double()
    row = audit.infidelity({"Gradient": attributions}, net, (x, classes), perturbation=lambda rows, e, s: changes[e, s],
                           samples=samples, normalize=normalize).rows[0]
    ours = infidelity_scores(net, x, attributions, classes, lambda rows, e, s: changes[e, s], samples, normalize)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-7)
    assert row["infidelity"] == pytest.approx(theirs.mean().item(), rel=1e-4)


def whole(rows, examples, samples):
    """A binary perturbation selecting every feature, moved to the zero baseline."""
    return torch.ones_like(rows), torch.zeros_like(rows)


def test_infidelity_of_ig_with_the_baseline_perturbation_is_its_completeness_gap_squared():
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(4)) + 0.1
    net = small_cnn()
    with torch.no_grad():
        classes = net(x).argmax(1)
    ig = ga.IntegratedGradients(steps=4)
    attributions, gap = ig.with_delta(net, x, classes)
    assert gap.abs().min() > 1e-4                                  # a real gap: 4 steps over ReLUs
    assert torch.allclose(infidelity_scores(net, x, attributions, classes, whole, 1, normalize=False),
                          gap.double() ** 2, rtol=1e-3)
    # The local form: the path-averaged gradient (attributions / (x - 0)) with I = x - baseline.
    local = infidelity_scores(net, x, attributions / x, classes, lambda rows, e, s: rows, 1, normalize=False)
    assert torch.allclose(local, gap.double() ** 2, rtol=1e-3)
    row = audit.infidelity({"IG": ig}, net, (x, classes), perturbation=whole, samples=1, normalize=False).rows[0]
    assert row["infidelity"] == pytest.approx((gap.double() ** 2).mean().item(), rel=1e-3)


def test_square_perturbations_zero_one_square_and_the_gradient_of_a_linear_model_is_perfectly_faithful():
    x = torch.rand(3, 2, 12, 12, generator=torch.Generator().manual_seed(5)) + 0.5
    perturb = square_perturbations(x, samples=20, seed=0)
    examples, draws = torch.arange(3).repeat(20), torch.arange(20).repeat_interleave(3)
    change, zeroed = perturb(x[examples], examples, draws)
    assert torch.equal(zeroed, x[examples] - change)
    inside = change[:, 0] != 0
    sides = inside.sum((1, 2)).double().sqrt()
    assert torch.equal(sides, sides.round()) and sides.min() >= 1 and sides.max() <= 10
    assert torch.equal(inside.any(2).sum(1).double(), sides)      # one square: as many rows as its side
    assert torch.equal(change[inside[:, None].expand_as(change)], x[examples][inside[:, None].expand_as(change)])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 12 * 12, 2)).eval()
    rows = {row["method"]: row for row in audit.infidelity({"Gradient": ga.Saliency(abs=False), "Random": ga.Random()},
                                                          net, (x, torch.zeros(3, dtype=torch.long)), samples=20,
                                                          normalize=False).rows}
    assert rows["Gradient"]["infidelity"] < 1e-10 < rows["Random"]["infidelity"]
    indicator, _ = square_perturbations(x, samples=20, seed=0, binary=True)(x[examples], examples, draws)
    assert torch.equal(indicator, inside[:, None].expand_as(change).float())
    global_rows = {row["method"]: row for row in audit.infidelity(
        {"InputXGradient": ga.InputXGradient(), "Gradient": ga.Saliency(abs=False)}, net,
        (x, torch.zeros(3, dtype=torch.long)), samples=20, normalize=False, binary=True).rows}
    assert global_rows["InputXGradient"]["infidelity"] < 1e-10 < global_rows["Gradient"]["infidelity"]


def test_a_perturbation_of_the_wrong_shape_is_named():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    net, methods = small_cnn(), {"Saliency": ga.Saliency()}
    with pytest.raises(ValueError, match=r"perturbation must return I with the rows' shape \[\d+, 1, 8, 8\]; got "
                                         r"\[\d+, 8, 8\]"):
        audit.infidelity(methods, net, (x, torch.zeros(3, dtype=torch.long)),
                         perturbation=lambda rows, e, s: rows[:, 0], samples=2)
    with pytest.raises(ValueError, match="perturbation must return the perturbed input with the rows' shape"):
        audit.infidelity(methods, net, (x, torch.zeros(3, dtype=torch.long)),
                         perturbation=lambda rows, e, s: (rows, rows[:1]), samples=2)


def _counting(net):
    """``net`` with a forward hook counting the input rows it sees (a list holding the count)."""
    seen = [0]
    net.register_forward_hook(lambda module, inputs, output: seen.__setitem__(0, seen[0] + len(inputs[0])))
    return seen


@pytest.mark.parametrize("metric", ["infidelity", "faithfulness_correlation"])
def test_seven_maps_share_one_run_of_the_model_and_each_scores_as_it_does_alone(metric, tmp_path):
    """The issue's shared passes: seven maps cost the model the rows of one map, and each map's number is
    identical alone, among the seven, and when the others come from the store (the draw does not depend on them)."""
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    maps = {f"map{i}": torch.randn(5, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(7)}
    net = small_cnn()
    seen = _counting(net)
    kwargs = {"samples": 6, "seed": 4} if metric == "infidelity" else {"samples": 6, "subset": 5, "seed": 4}
    run = getattr(audit, metric)
    run({"map3": maps["map3"]}, net, (x, torch.zeros(5, dtype=torch.long)), **kwargs)    # sizes the chunks once
    seen[0] = 0
    alone = run({"map3": maps["map3"]}, net, (x, torch.zeros(5, dtype=torch.long)), **kwargs).rows[0]
    one_map = seen[0]
    seen[0] = 0
    together = {r["method"]: r for r in run(maps, net, (x, torch.zeros(5, dtype=torch.long)), **kwargs).rows}
    assert seen[0] == one_map, "seven maps ran the model over more rows than one map"
    assert together["map3"] == alone
    store = Store(tmp_path / "results.sqlite")
    run({n: maps[n] for n in ("map0", "map5")}, net, (x, torch.zeros(5, dtype=torch.long)), store=store, **kwargs)
    served = {r["method"]: r for r in run(maps, net, (x, torch.zeros(5, dtype=torch.long)), store=store,
                                          **kwargs).rows}
    assert served == together
    store.close()


def test_infidelity_takes_the_indicator_for_the_named_methods_and_the_change_for_the_others():
    x = torch.rand(4, 2, 8, 8, generator=torch.Generator().manual_seed(8)) + 0.5
    net, y = small_cnn(channels=2), torch.zeros(4, dtype=torch.long)
    methods = {"InputXGradient": ga.InputXGradient(), "Gradient": ga.Saliency(abs=False)}
    mixed = {r["method"]: r for r in audit.infidelity(methods, net, (x, y), samples=5, binary=["InputXGradient"]).rows}
    indicator = audit.infidelity({"InputXGradient": methods["InputXGradient"]}, net, (x, y), samples=5, binary=True)
    change = audit.infidelity({"Gradient": methods["Gradient"]}, net, (x, y), samples=5, binary=False)
    assert mixed["InputXGradient"] == indicator.rows[0] and mixed["InputXGradient"]["binary"] is True
    assert mixed["Gradient"] == change.rows[0] and mixed["Gradient"]["binary"] is False
    with pytest.raises(ValueError, match=r"binary must be True, False or names among the methods \(InputXGradient, "
                                         r"Gradient\); got \['IG'\]"):
        audit.infidelity(methods, net, (x, y), samples=5, binary=["IG"])


def test_infidelity_takes_a_methods_map_of_the_images_size_as_it_takes_a_precomputed_one():
    """FullGrad (like a CAM) gives [N, H, W]: applied to every channel, as a precomputed map is."""
    x = torch.rand(4, 2, 8, 8, generator=torch.Generator().manual_seed(9))
    net, y = small_cnn(channels=2), torch.zeros(4, dtype=torch.long)
    maps = ga.FullGrad()(net, x, target=net(x).argmax(1))
    assert maps.shape == (4, 8, 8)
    by_method = audit.infidelity({"FullGrad": ga.FullGrad()}, net, (x, y), samples=5).rows[0]
    by_map = audit.infidelity({"FullGrad": maps}, net, (x, y), samples=5).rows[0]
    assert by_method["infidelity_each"] == pytest.approx(by_map["infidelity_each"], rel=1e-6)
