"""Sensitivity-max, faithfulness correlation and monotonicity against truths: Captum's sensitivity_max given the
same noise (and the gradient explainer it cannot run), a linear model's fixed gradient and exact contributions,
hand-written loops of Bhatt's and Arya's definitions, and Quantus 0.6.0 on the same inputs (equal where the
definitions agree; its Monotonicity, run as shipped, passing a map on images whose probability only falls)."""

import warnings

import numpy as np
import pytest
import torch
from helpers import import_quantus
from nets import small_cnn
from torch import nn

import gradaudit as ga
from gradaudit.audit.faithfulness_correlation import correlation_scores, faithfulness_correlation, random_subsets
from gradaudit.audit.monotonicity import insertion_probabilities, monotonicity
from gradaudit.audit.sensitivity_max import sensitivity_max, sensitivity_scores, uniform_noise
from gradaudit.store import Store


def _linear(channels=1, size=8, classes=2):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes)).eval()


def _state(net):
    return ({k: v.clone() for k, v in net.state_dict().items()}, [p.requires_grad for p in net.parameters()],
            [p.grad for p in net.parameters()], net.training)


def _unchanged(net, before):
    state, flags, grads, training = before
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert [p.requires_grad for p in net.parameters()] == flags and net.training == training
    assert all(g is None for g in grads) and all(p.grad is None for p in net.parameters())


def _gradient(model, inputs, target):
    """A user's own gradient explainer (what captum #595 reports): it needs autograd on."""
    inputs = inputs.detach().requires_grad_(True)
    return torch.autograd.grad(model(inputs).gather(1, target[:, None]).sum(), inputs)[0]


# sensitivity_max

def test_sensitivity_max_equals_captums_given_the_same_perturbations():
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max as captum_sensitivity_max

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 2, 8, 8, generator=generator)
    samples = 5
    noise = (torch.rand(4, samples, 2, 8, 8, generator=generator) * 2 - 1) * 0.05
    net = small_cnn(classes=3, channels=2)
    classes = torch.tensor([0, 1, 2, 1])
    before = _state(net)

    def captum_perturbation(inputs):                 # Captum repeats each example `samples` times in a row
        assert torch.equal(inputs, x.repeat_interleave(samples, 0))
        return inputs + noise.flatten(0, 1)

    theirs = captum_sensitivity_max(Saliency(net).attribute, x, perturb_func=captum_perturbation,
                                    n_perturb_samples=samples, target=classes, abs=False).double()
    for rows in (1, 13, None):                       # one image a call, two, all: the same numbers
        ours = sensitivity_scores(ga.Saliency(abs=False), net, x, classes, lambda e: noise[e], samples, rows)
        assert torch.allclose(ours, theirs, rtol=1e-5)
    assert theirs.min() > 0.01                       # a ReLU net's gradient does move
    _unchanged(net, before)


def test_captum_runs_the_explainer_without_gradients_so_a_gradient_explainer_fails_there_and_works_here():
    from captum.metrics import sensitivity_max as captum_sensitivity_max

    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 8, 8, generator=generator)
    classes = torch.tensor([0, 1, 2])
    noise = (torch.rand(3, 4, 1, 8, 8, generator=generator) * 2 - 1) * 0.02
    net = small_cnn()
    with pytest.raises(RuntimeError, match="does not require grad"):
        captum_sensitivity_max(lambda inputs, target: _gradient(net, torch.cat(tuple(inputs)), target), x,
                               perturb_func=lambda inputs: inputs + noise.flatten(0, 1), n_perturb_samples=4,
                               target=classes)
    ours = sensitivity_scores(_gradient, net, x, classes, lambda e: noise[e], 4)
    same = sensitivity_scores(ga.Saliency(abs=False), net, x, classes, lambda e: noise[e], 4)
    assert torch.allclose(ours, same, rtol=1e-5) and ours.min() > 0.01
    row = sensitivity_max({"own gradient": _gradient}, net, (x, classes), samples=4).rows[0]
    assert np.isfinite(row["sensitivity_max"]) and row["sensitivity_max"] > 0


def test_saliency_of_a_linear_model_has_sensitivity_zero_even_where_noise_flips_the_prediction():
    net = _linear()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():                            # move each image onto the decision boundary
        w = net[1].weight[1] - net[1].weight[0]
        logits = net(x)
        x = x - ((logits[:, 1] - logits[:, 0]) / w.square().sum())[:, None, None, None] * w.view(1, 1, 8, 8)
        assert (net(x)[:, 1] - net(x)[:, 0]).abs().max() < 1e-4
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    before = _state(net)
    result = sensitivity_max({"Saliency": ga.Saliency(abs=False), "|Saliency|": ga.Saliency(),
                              "Random": ga.Random()}, net, (x, y), radius=0.1, samples=8)
    rows = {row["method"]: row for row in result.rows}
    # The gradient of a fixed class's logit is its weight row wherever x goes: the class explained is the label.
    assert rows["Saliency"]["sensitivity_max_each"] == [0.0] * 6 and rows["|Saliency|"]["sensitivity_max"] == 0
    assert min(rows["Random"]["sensitivity_max_each"]) > 0.3
    assert rows["Saliency"]["images"] == rows["Saliency"]["sensitivity_max_n"] == 6
    # Following the prediction instead would explain the other class on some copies: far from 0.
    flipped = sensitivity_scores(lambda m, xs, t: _gradient(m, xs, m(xs).argmax(1)), net, x, y,
                                 uniform_noise(x, 8, 0.1), 8)
    assert flipped.max() > 0.5
    _unchanged(net, before)


def test_seeded_sensitivity_is_deterministic_bounded_and_independent_of_chunking():
    x = torch.rand(5, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    noise = uniform_noise(x, 6, 0.02, seed=4)
    drawn = noise(torch.arange(5))
    assert drawn.shape == (5, 6, 2, 8, 8) and drawn.abs().max() <= 0.02 and drawn.abs().max() > 0.019
    assert torch.equal(noise(torch.tensor([3, 1])), drawn[[3, 1]])
    assert not torch.equal(uniform_noise(x, 6, 0.02, seed=5)(torch.arange(5)), drawn)
    net = small_cnn(channels=2)
    y = torch.tensor([0, 1, 2, 0, 1])
    first = sensitivity_max(ga.Saliency(), net, (x, y), samples=6, seed=4).rows[0]
    again = sensitivity_max(ga.Saliency(), net, (x, y), samples=6, seed=4).rows[0]
    other = sensitivity_max(ga.Saliency(), net, (x, y), samples=6, seed=5).rows[0]
    assert first == again and first["sensitivity_max_each"] != other["sensitivity_max_each"]
    one_by_one = sensitivity_scores(ga.Saliency(), net, x, y, noise, 6, rows=1)
    assert one_by_one.tolist() == pytest.approx(first["sensitivity_max_each"], rel=1e-6)


def test_sensitivity_max_refuses_precomputed_maps_and_bad_arguments(tmp_path):
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    net = small_cnn()
    with pytest.raises(ValueError, match="precomputed maps cannot be used; pass the method itself for 'm'"):
        sensitivity_max({"m": torch.rand(2, 8, 8)}, net, (x, y))
    with pytest.raises(ValueError, match="samples must be a positive number"):
        sensitivity_max(ga.Saliency(), net, (x, y), samples=0)
    with pytest.raises(ValueError, match="radius must be a non-negative number"):
        sensitivity_max(ga.Saliency(), net, (x, y), radius=-0.1)
    store = Store(tmp_path / "results.sqlite")
    first = sensitivity_max({"m": ga.Saliency()}, net, (x, y), samples=2, store=store).rows
    assert sensitivity_max({"m": ga.Saliency()}, net, (x, y), samples=2, store=store).rows == first
    assert len(store.rows("sensitivity_max")) == 1
    store.close()


# faithfulness_correlation

def _hand_correlation(net, x, maps, classes, subsets, baseline):
    """Bhatt et al.'s faithfulness correlation with loops: remove each subset, all channels, read the logit drop."""
    width = x.shape[3]
    scores = []
    with torch.no_grad():
        for i in range(len(x)):
            clean = float(net(x[i:i + 1])[0, classes[i]])
            sums, drops = [], []
            for subset in subsets[i]:
                removed = x[i:i + 1].clone()
                for p in subset.tolist():
                    removed[0, :, p // width, p % width] = baseline
                drops.append(clean - float(net(removed)[0, classes[i]]))
                sums.append(float(maps[i].flatten()[subset].sum()))
            scores.append(np.corrcoef(sums, drops)[0, 1])
    return np.array(scores)


@pytest.mark.parametrize("baseline", [0.0, 0.3])
def test_faithfulness_correlation_equals_a_hand_implementation(baseline):
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 8, 8, generator=generator)
    y = torch.tensor([0, 1, 2, 0])
    net = small_cnn(channels=3)
    before = _state(net)
    subsets = random_subsets(4, 64, 6, 12, seed=1)
    assert all(len(set(draw.tolist())) == 6 for image in subsets for draw in image)   # distinct pixels
    attributions = ga.Saliency(abs=False)(net, x, y)
    maps = attributions.sum(1)
    expected = _hand_correlation(net, x, maps, y, subsets, baseline)
    assert np.allclose(correlation_scores(net, x, maps, y, subsets, baseline).numpy(), expected, atol=1e-5)
    row = faithfulness_correlation({"Gradient": ga.Saliency(abs=False)}, net, (x, y), subset=6, samples=12,
                                   baseline=baseline, seed=1).rows[0]
    assert np.allclose(row["faithfulness_correlation_each"], expected, atol=1e-5)
    assert row["faithfulness_correlation"] == pytest.approx(expected.mean(), abs=1e-5)
    _unchanged(net, before)


def test_input_x_gradient_of_a_linear_model_correlates_perfectly_and_random_does_not():
    net = _linear(channels=2)
    x = torch.rand(8, 2, 8, 8, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 1] * 4)
    # A logit drop is exactly the subset's summed w * x: IxG's sum over the subset, whatever the subset.
    rows = {row["method"]: row for row in faithfulness_correlation(
        {"IxG": ga.InputXGradient(), "Random": ga.Random()}, net, (x, y), subset=5, samples=30).rows}
    assert rows["IxG"]["faithfulness_correlation_each"] == pytest.approx([1.0] * 8, abs=1e-6)
    assert rows["Random"]["faithfulness_correlation_high"] < 0.5
    assert rows["IxG"]["subset"] == 5 and rows["IxG"]["images"] == 8
    assert faithfulness_correlation(ga.InputXGradient(), net, (x, y)).rows[0]["subset"] == 1   # ceil(64 / 224)


def test_faithfulness_correlation_equals_quantus_given_the_same_subsets():
    quantus = import_quantus()
    generator = torch.Generator().manual_seed(7)
    x = torch.rand(5, 1, 8, 8, generator=generator)
    y = torch.tensor([0, 1, 2, 0, 1])
    maps = torch.randn(5, 8, 8, generator=generator)
    net = small_cnn()
    runs, size = 10, 5
    np.random.seed(11)                               # Quantus draws each run's subsets image by image
    drawn = [[np.random.choice(64, size, replace=False) for _ in range(5)] for _ in range(runs)]
    subsets = torch.from_numpy(np.array(drawn)).transpose(0, 1).long()
    np.random.seed(11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, perturb_baseline=0.0, abs=False,
                                                 normalise=False, return_aggregate=False, disable_warnings=True)
        theirs = metric(model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(),
                        device="cpu")
    ours = correlation_scores(net, x, maps, y, subsets, 0.0)
    assert np.allclose(ours.numpy(), theirs, atol=1e-5)


def test_faithfulness_correlation_rejects_bad_arguments():
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    net = small_cnn()
    with pytest.raises(ValueError, match="subset must be a number of pixels between 1 and the image's 64"):
        faithfulness_correlation(ga.Saliency(), net, (x, y), subset=65)
    with pytest.raises(ValueError, match="subset must be"):
        faithfulness_correlation(ga.Saliency(), net, (x, y), subset=0)
    with pytest.raises(ValueError, match="samples must be at least 2"):
        faithfulness_correlation(ga.Saliency(), net, (x, y), samples=1)
    with pytest.raises(ValueError, match="baseline must be a number"):
        faithfulness_correlation(ga.Saliency(), net, (x, y), baseline="black")
    with pytest.raises(ValueError, match=r"precomputed maps must have shape \[N, H, W\]"):
        faithfulness_correlation({"m": torch.rand(1, 8, 8)}, net, (x, y))


# monotonicity

def _hand_monotonicity(net, x, maps, classes, step, baseline):
    """Arya et al.'s monotonicity_metric (AIX360) with loops, ``step`` pixels (all channels) per insertion: the
    pass (1/0), the share of steps not falling and the probabilities after each insertion, per image."""
    width = x.shape[3]
    passed, rising, curves = [], [], []
    with torch.no_grad():
        for i in range(len(x)):
            order = np.argsort(maps[i].flatten().numpy(), kind="stable")
            current = torch.full_like(x[i:i + 1], baseline)
            probabilities = []
            for start in range(0, len(order), step):
                for p in order[start:start + step]:
                    current[0, :, p // width, p % width] = x[i, :, p // width, p % width]
                probabilities.append(float(torch.softmax(net(current), 1)[0, classes[i]]))
            steps = np.diff(probabilities) >= 0
            passed.append(float(steps.all()))
            rising.append(steps.mean())
            curves.append(probabilities)
    return np.array(passed), np.array(rising), np.array(curves)


def _one_signed_linear_model():
    """A 2-class linear model and images whose pixels all push towards class 0 (4 images) or all away (4)."""
    net = _linear()
    w = (net[1].weight[0] - net[1].weight[1]).detach().view(1, 8, 8)
    magnitude = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(8)) + 0.1
    x = magnitude * torch.cat([w.sign().expand(4, 1, 8, 8), -w.sign().expand(4, 1, 8, 8)])
    return net, x, torch.zeros(8, dtype=torch.long)


@pytest.mark.parametrize("step", [3, 16])
def test_monotonicity_equals_arya_written_out(step):
    generator = torch.Generator().manual_seed(9)
    x = torch.rand(6, 3, 8, 8, generator=generator)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    maps = torch.rand(6, 8, 8, generator=generator)              # continuous: no ties
    net = small_cnn(channels=3)
    before = _state(net)
    passed, rising, curves = _hand_monotonicity(net, x, maps, y, step, 0.2)
    assert curves.shape == (6, -(-64 // step))
    assert np.allclose(insertion_probabilities(net, x, maps, y, step, 0.2).numpy(), curves, atol=1e-6)
    row = monotonicity({"m": maps}, net, (x, y), step=step, baseline=0.2).rows[0]
    assert row["monotonicity_each"] == passed.tolist()
    assert row["rising_steps_each"] == pytest.approx(rising.tolist(), abs=1e-12)
    assert row["rising_steps"] == pytest.approx(rising.mean(), abs=1e-9)
    assert row["monotonicity"] == pytest.approx(passed.mean()) and row["images"] == 6
    _unchanged(net, before)


def test_monotonicity_of_a_linear_model_follows_the_signs_of_the_contributions():
    net, x, y = _one_signed_linear_model()
    rows = {row["method"]: row for row in monotonicity({"IxG": ga.InputXGradient(), "Random": ga.Random()}, net,
                                                       (x, y), step=4).rows}
    # Every inserted pixel raises p(0) on the first four images and lowers it on the last four, in any order.
    for name in ("IxG", "Random"):
        assert rows[name]["monotonicity_each"] == [1.0] * 4 + [0.0] * 4
        assert rows[name]["rising_steps"] == pytest.approx(0.5)


def test_quantus_monotonicity_never_inserts_so_every_map_passes_and_inserting_for_it_gives_ours():
    quantus = import_quantus()
    net, x, y = _one_signed_linear_model()
    maps = torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(10))
    ours = monotonicity({"m": maps}, net, (x, y), step=4).rows[0]["monotonicity_each"]
    assert ours == [1.0] * 4 + [0.0] * 4
    flat = x.numpy().reshape(8, -1)

    def insert(arr, indices, **_):                   # what Quantus's insert step should do: x's values go in
        inserted = arr.copy()
        inserted[np.arange(len(arr))[:, None], indices] = flat[np.arange(len(arr))[:, None], indices]
        return inserted

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shipped = quantus.Monotonicity(features_in_step=4, perturb_baseline=0.0, disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
        fixed = quantus.Monotonicity(features_in_step=4, perturb_baseline=0.0, perturb_func=insert,
                                     disable_warnings=True)(
            model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    assert shipped == [True] * 8                     # the image stays all baseline: p never changes
    assert [float(v) for v in fixed] == ours


def test_monotonicity_rejects_bad_arguments():
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    net = small_cnn()
    with pytest.raises(ValueError, match="step must be a number of pixels from 1 to 63"):
        monotonicity(ga.Saliency(), net, (x, y), step=64)
    with pytest.raises(ValueError, match="step must be"):
        monotonicity(ga.Saliency(), net, (x, y), step=0)
    with pytest.raises(ValueError, match="baseline must be a number"):
        monotonicity(ga.Saliency(), net, (x, y), baseline=None)


def test_multi_hot_labels_explain_the_class_predicted_on_the_clean_image():
    net, x, _ = _one_signed_linear_model()
    with torch.no_grad():
        predicted = net(x).argmax(1)
    multi_hot = nn.functional.one_hot(1 - predicted, 2)            # labels that name the other class
    maps = torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(12))
    by_prediction = monotonicity({"m": maps}, net, (x, multi_hot), step=4).rows[0]
    assert by_prediction["monotonicity_each"] == monotonicity({"m": maps}, net, (x, predicted), step=4).rows[0][
        "monotonicity_each"]
