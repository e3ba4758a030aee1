"""Weight saliency and unlearning (SalUn, Fan et al. 2024): the mask against a brute-force ranking,
the masked loop against bit-identity, Retrain against the forget set, MIA-efficacy against its
truths, models left as found, clear errors, and `gradaudit unlearn` end to end with kill -9 resume."""

import json
import os
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from helpers import assert_unchanged, kill_once_rows_appear, snapshot, stored_rows
from torch import nn

from gradaudit import cli, data, unlearn
from gradaudit.audit import mia_efficacy, unlearning
from gradaudit.audit.unlearning import membership_classifier, with_gaps
from gradaudit.data.inputs import Examples


def _tiny(dtype=torch.float32, seed=0):
    """30 weights, three classes (with two, the output layer's gradients come in exactly tied pairs)."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([("hidden", nn.Linear(5, 3)), ("relu", nn.Tanh()), ("out", nn.Linear(3, 3))])
                         ).to(dtype)


def _blobs(n=200, d=6, classes=3, seed=0):
    """Separable Gaussian blobs: x [n, d], y [n]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=g) * 3
    return Examples(centres[y] + torch.randn(n, d, generator=g), y)


def _mlp(d=6, classes=3, hidden=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def _brute_force_scores(model, x, y):
    """|d mean CE / d w| of every scalar weight by central finite differences (float64), one at a time."""
    scores = {}
    loss = lambda: nn.functional.cross_entropy(model(x), y).item()  # noqa: E731
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.view(-1)
            grads = []
            for j in range(flat.numel()):
                keep = flat[j].item()
                flat[j] = keep + 1e-6
                up = loss()
                flat[j] = keep - 1e-6
                down = loss()
                flat[j] = keep
                grads.append(abs(up - down) / 2e-6)
            scores[name] = grads
    return scores


@pytest.mark.parametrize("threshold", [0.25, 0.5, 1.0])
def test_mask_keeps_the_largest_gradients_as_a_brute_force_ranking(threshold):
    model = _tiny(torch.float64)
    x, y = torch.randn(5, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    scores = _brute_force_scores(model, x, y)
    everything = sorted(((s, name, j) for name, values in scores.items() for j, s in enumerate(values)), reverse=True)
    kept = {(name, j) for _, name, j in everything[:round(threshold * len(everything))]}
    masks = unlearn.weight_saliency(model, (x, y), threshold)
    assert set(masks) == {"hidden.weight", "hidden.bias", "out.weight", "out.bias"}
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == dict(model.named_parameters())[name].shape
        assert {(name, j) for j in range(mask.numel()) if mask.view(-1)[j]} == {k for k in kept if k[0] == name}
        torch.testing.assert_close(masks.scores[name].view(-1), torch.tensor(scores[name], dtype=torch.float64),
                                   rtol=1e-5, atol=1e-8)
    assert masks.share == pytest.approx(len(kept) / len(everything))
    per_layer = unlearn.weight_saliency(model, (x, y), 0.5, scope="layer")
    for name, mask in per_layer.items():
        order = sorted(range(len(scores[name])), key=lambda j: -scores[name][j])
        assert {j for j in range(mask.numel()) if mask.view(-1)[j]} == set(order[:max(1, round(0.5 * len(order)))])
    summary = {r["parameter"]: r["salient_share"] for r in per_layer.summary()}
    assert summary == {"hidden.weight": 8 / 15, "hidden.bias": 2 / 3, "out.weight": 4 / 9, "out.bias": 2 / 3}


def test_the_authors_ascending_rank_rule_keeps_the_least_salient_half():
    """Their generate_mask.py: positions = argsort(|g|) (ascending), ranks = argsort(positions), mask = ranks <
    int(n x share). At share 0.5 that is our anti-salient mask (the complement), not the salient one."""
    model = _tiny(torch.float64)
    masks = unlearn.weight_saliency(model, (torch.randn(5, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])))
    every = torch.cat([s.flatten() for s in masks.scores.values()])
    assert every.numel() % 2 == 0
    ranks = torch.argsort(torch.argsort(every))
    theirs = ranks < int(every.numel() * 0.5)
    ours_anti = torch.cat([m.flatten() for m in masks.complement().values()])
    assert torch.equal(theirs, ours_anti)
    assert every[theirs].max() <= every[~theirs].min()


def test_salun_changes_only_the_salient_weights_bit_for_bit():
    train = _blobs()
    split = unlearn.forget_split(train, fraction=0.2, seed=1)
    model = _mlp()
    masks = unlearn.weight_saliency(model, split.forget, 0.3)
    new = unlearn.SalUn(masks=masks, epochs=2, lr=0.1, batch_size=32)(model, split.forget, split.retain, seed=0)
    moved = 0
    for (name, before), after in zip(model.named_parameters(), new.parameters(), strict=True):
        assert torch.equal(after[~masks[name]], before[~masks[name]]), name      # weight decay and momentum too
        moved += int((after[masks[name]] != before[masks[name]]).sum())
    assert moved > 0.9 * sum(int(m.sum()) for m in masks.values())
    full = {n: torch.ones_like(m) for n, m in masks.items()}
    a = unlearn.SalUn(masks=full, epochs=2, lr=0.1, batch_size=32)(model, split.forget, split.retain, seed=3)
    b = unlearn.RandomLabel(epochs=2, lr=0.1, batch_size=32)(model, split.forget, split.retain, seed=3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)                                    # a full mask is plain RandomLabel: one loop


def test_controls_have_the_promised_shares():
    model = _mlp()
    masks = unlearn.weight_saliency(model, _blobs(30), 0.3)
    random = masks.random_like(seed=4)
    assert sum(int(m.sum()) for m in random.values()) == sum(int(m.sum()) for m in masks.values())
    assert not all(torch.equal(random[n], masks[n]) for n in masks)
    assert all(torch.equal(masks.complement()[n], ~masks[n]) for n in masks)
    assert masks.complement().share == pytest.approx(1 - masks.share)


SEEN = []


class Recording(nn.Module):
    """Records every input batch it is called on (into the module-level SEEN, which survives deepcopy)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        SEEN.append(x.detach().clone())
        return self.net(x)


def _seen_rows():
    return {tuple(row.tolist()) for batch in SEEN for row in batch}


@pytest.mark.parametrize("method,reads_forget", [(unlearn.Retrain(epochs=3, lr=0.05, batch_size=16), False),
                                                 (unlearn.FineTune(epochs=1, batch_size=16), False),
                                                 (unlearn.GradientAscent(epochs=1, batch_size=16), True)])
def test_retrain_never_sees_a_forget_example(method, reads_forget):
    split = unlearn.forget_split(_blobs(), fraction=0.25, seed=2)
    model = Recording(_mlp())
    SEEN.clear()
    method(model, split.forget, split.retain, seed=0)
    seen = _seen_rows()
    forget = {tuple(row.tolist()) for row in split.forget.x}
    retain = {tuple(row.tolist()) for row in split.retain.x}
    assert bool(seen & forget) == reads_forget                    # GradientAscent: the recorder does see them
    assert bool(seen & retain) != reads_forget


def test_retrain_starts_from_a_fresh_network():
    model = _mlp()
    fresh = unlearn.reinitialised(model, seed=5)
    again = unlearn.reinitialised(model, seed=5)
    for p, q, r in zip(model.parameters(), fresh.parameters(), again.parameters(), strict=True):
        assert not torch.equal(p, q) and torch.equal(q, r)


def _memorised(seed=0):
    """Random labels on Gaussian inputs, memorised by a wide MLP: members are told apart by confidence."""
    g = torch.Generator().manual_seed(seed)
    train = Examples(torch.randn(400, 20, generator=g), torch.randint(0, 4, (400,), generator=g))
    test = Examples(torch.randn(300, 20, generator=g), torch.randint(0, 4, (300,), generator=g))
    split = unlearn.forget_split(train, fraction=0.25, seed=seed)
    fit = unlearn.Retrain(epochs=150, lr=0.05, batch_size=50)
    return fit, split, test, _mlp(20, 4, 256, seed)


@pytest.mark.slow
def test_mia_efficacy_of_retrain_matches_the_test_sets_non_member_rate_and_the_original_fails():
    fit, split, test, net = _memorised()
    full = Examples(torch.cat([split.forget.x, split.retain.x]), torch.cat([split.forget.y, split.retain.y]))
    original = fit(net, split.forget, full, seed=0)                # trained on everything, forget included
    retrained = fit(net, split.forget, split.retain, seed=0)
    assert all(float((m(d.x).argmax(1) == d.y).float().mean()) == 1 for m, d in ((original, full),
                                                                                   (retrained, split.retain)))
    classifier = membership_classifier(retrained, split.retain, test)
    from gradaudit.audit.unlearning import confidences

    test_rate = 1 - classifier.predict(confidences(retrained, test).double().numpy()[:, None]).mean()
    efficacy = mia_efficacy(retrained, split.forget, split.retain, test)
    n_f, n_t = len(split.forget), len(test)
    spread = 3 * (test_rate * (1 - test_rate) * (1 / n_f + 1 / n_t)) ** 0.5 + 0.02
    assert abs(efficacy - test_rate) <= spread, (efficacy, test_rate, spread)
    assert test_rate > 0.8
    assert mia_efficacy(original, split.forget, split.retain, test) < 0.1     # the memorised forget set: members


def test_unlearning_audit_rows_gaps_and_model_left_as_found():
    train, test = _blobs(240, seed=0), _blobs(90, seed=1)
    split = unlearn.forget_split(train, classes=2)
    model = _mlp()
    unlearn.FineTune(epochs=5, lr=0.05, batch_size=32)(model, split.forget, train)
    trained = unlearn.FineTune(epochs=20, lr=0.05, batch_size=32)(model, split.forget, train)
    trained.train()
    trained[0].weight.grad = torch.ones_like(trained[0].weight)
    before = snapshot(trained)
    methods = [unlearn.Retrain(epochs=10, lr=0.05, batch_size=32), unlearn.FineTune(epochs=1, batch_size=32),
               unlearn.GradientAscent(epochs=1, batch_size=32), unlearn.RandomLabel(epochs=1, batch_size=32),
               unlearn.L1Sparse(epochs=1, batch_size=32), unlearn.SalUn(epochs=1, batch_size=32),
               unlearn.SalUn(epochs=1, batch_size=32, mask="random"),
               unlearn.SalUn(epochs=1, batch_size=32, mask="anti-salient")]
    kept = test.y != 2
    result = unlearning(methods, trained, split.forget, split.retain, Examples(test.x[kept], test.y[kept]),
                        seeds=(0, 1), scenario="class", progress=False)
    assert_unchanged(trained, before)
    rows = result.table()
    assert len(rows) == 2 * (1 + len(methods))
    assert set(rows.method) == {"Original", "Retrain", "FineTune", "GradientAscent", "RandomLabel", "L1Sparse",
                                "SalUn", "SalUn[random mask]", "SalUn[anti-salient mask]"}
    retrain = rows[rows.method == "Retrain"]
    assert (retrain.UA == 1.0).all() and (retrain.gap == 0).all()          # never saw class 2: all wrong
    original = rows[rows.method == "Original"]
    assert (original.UA < 0.1).all() and (original.gap > 0.2).all()
    for column in ("UA", "RA", "TA", "MIA"):
        assert rows[column].between(0, 1).all()


def test_gap_is_the_mean_absolute_difference_to_retrain_of_the_same_seed():
    rows = [{"scenario": "random", "seed": 0, "method": "Retrain", "UA": 0.1, "RA": 0.9, "TA": 0.8, "MIA": 0.2},
            {"scenario": "random", "seed": 0, "method": "X", "UA": 0.3, "RA": 0.8, "TA": 0.8, "MIA": 0.6},
            {"scenario": "random", "seed": 1, "method": "X", "UA": 0.3, "RA": 0.8, "TA": 0.8, "MIA": 0.6}]
    gaps = [r["gap"] for r in with_gaps(rows)]
    assert gaps[0] == 0 and gaps[1] == pytest.approx((0.2 + 0.1 + 0 + 0.4) / 4) and gaps[2] is None


def test_every_unlearner_leaves_the_model_as_found_on_success_and_on_error():
    split = unlearn.forget_split(_blobs(), fraction=0.2, seed=0)
    model = _mlp()
    model.train()
    model[0].weight.grad = torch.full_like(model[0].weight, 2.0)
    before = snapshot(model)
    unlearn.weight_saliency(model, split.forget)
    for method in (unlearn.Retrain(epochs=1), unlearn.FineTune(epochs=1), unlearn.GradientAscent(epochs=1),
                   unlearn.RandomLabel(epochs=1), unlearn.L1Sparse(epochs=1), unlearn.SalUn(epochs=1)):
        new = method(model, split.forget, split.retain)
        assert new is not model and not new.training
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="masks must hold one bool tensor per trainable parameter"):
        unlearn.SalUn(masks={"0.weight": torch.ones(16, 6, dtype=torch.bool)}, epochs=1)(model, split.forget,
                                                                                          split.retain)
    wrong_shape = {n: torch.ones(3, dtype=torch.bool) for n, _ in model.named_parameters()}
    with pytest.raises(ValueError, match=r"of its shape \(0.weight \[16, 6\]"):
        unlearn.SalUn(masks=wrong_shape, epochs=1)(model, split.forget, split.retain)
    assert_unchanged(model, before)


def test_clear_errors():
    train = _blobs(60)
    model = _mlp()
    with pytest.raises(ValueError, match="indices is empty"):
        unlearn.forget_split(train, indices=[])
    with pytest.raises(ValueError, match="60 is not part of the training data"):
        unlearn.forget_split(train, indices=[3, 60])
    with pytest.raises(ValueError, match="repeats a training example"):
        unlearn.forget_split(train, indices=[3, 3])
    with pytest.raises(ValueError, match="class 7 has no training example"):
        unlearn.forget_split(train, classes=7)
    with pytest.raises(ValueError, match="exactly one of"):
        unlearn.forget_split(train, fraction=0.1, classes=1)
    with pytest.raises(ValueError, match="forget is empty"):
        unlearn.weight_saliency(model, Examples(train.x[:0], train.y[:0]))
    with pytest.raises(ValueError, match="forget is empty"):
        unlearn.FineTune(epochs=1)(model, Examples(train.x[:0], train.y[:0]), train)
    for bad in (0, -0.1, 1.5, True, "half"):
        with pytest.raises(ValueError, match=r"threshold must be a share of weights in \(0, 1\]"):
            unlearn.weight_saliency(model, train, bad)
    with pytest.raises(ValueError, match=r"threshold must be a share"):
        unlearn.SalUn(threshold=0)
    with pytest.raises(ValueError, match="mask must be one of"):
        unlearn.SalUn(mask="inverse")
    frozen = _mlp()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable weights"):
        unlearn.weight_saliency(frozen, train)
    with pytest.raises(ValueError, match="model has no trainable weights"):
        unlearn.FineTune(epochs=1)(frozen, train, train)


@pytest.mark.parametrize("argv,message", [
    (["--threshold", "0"], "threshold must be a share of weights in (0, 1]"),
    (["--scenarios", "random,sometimes"], "--scenarios 'sometimes' is not one of random, class"),
    (["--seeds", "0"], "--seeds must be an integer >= 1"),
    (["--forget-fraction", "1.5"], "--forget-fraction must be a share in (0, 1)"),
    (["--models", "a=m:f@a.pt,b=m:f@b.pt"], "--models takes one model to unlearn from"),
    (["--data", "mnist:/nowhere"], "/nowhere does not exist"),
])
def test_command_line_errors_are_one_line(argv, message, capsys, tmp_path):
    assert cli.main(["unlearn", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradaudit: error: ") and message in err and err.count("\n") == 1


def test_bundled_mnist_spec_is_a_stratified_seeded_split():
    train, test = data.load_splits("mnist")
    assert (len(train), len(test)) == (4000, 1000) and train.x.shape[1:] == (1, 28, 28)
    assert torch.equal(test.y.bincount(), torch.full((10,), 100))
    assert 0 <= float(train.x.min()) and float(train.x.max()) == 1.0
    again = data.load("mnist", "test")
    assert torch.equal(again.x, test.x)


def _rows(store):
    return [(key, {k: v for k, v in json.loads(row).items() if k != "seconds"})
            for key, row in stored_rows(store, "unlearning")]


@pytest.mark.slow
def test_unlearn_command_end_to_end_deterministic_and_resumes_after_kill_9(tmp_path):
    args = ["unlearn", "--preset", "tiny", "--seeds", "1", "--scenarios", "class,random"]
    assert cli.main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = _rows(tmp_path / "whole" / "results.sqlite")
    assert len(whole) == 2 * 9                                     # scenarios x (Original + 8 methods)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "gradaudit", *args, "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ})
    before = kill_once_rows_appear(first, out / "results.sqlite", audit="unlearning")
    assert 0 < len(before) < len(whole)
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    after = _rows(out / "results.sqlite")
    assert after == whole                                         # nothing repeated, and the same numbers
    page = (out / "report.html").read_text()
    assert "Unlearning: UA = 1 - forget accuracy" in page and "Weight saliency" in page
    assert page.count("data:image/png;base64") >= 2 and "SalUn[anti-salient mask]" in page


@pytest.mark.slow
def test_unlearn_your_own_model_on_your_data(tmp_path, monkeypatch, capsys):
    from gradaudit import models, train
    from gradaudit.store import Store

    (tmp_path / "mymodels.py").write_text("from gradaudit import models\n\n\ndef build():\n"
                                          "    return models.small_cnn((1, 28, 28), 10, width=4)\n\n\n"
                                          "def three():\n    return models.small_cnn((1, 28, 28), 3, width=4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    part = data.load("mnist", "train")
    torch.manual_seed(0)
    model = train.fit(models.small_cnn((1, 28, 28), 10, width=4), part, epochs=1, progress=False)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "run"
    base = ["unlearn", "--preset", "tiny", "--seeds", "1", "--scenarios", "class", "--out", str(out)]
    assert cli.main([*base, "--models", f"mine=mymodels:build@{tmp_path / 'w.pt'}"]) == 0
    saved = Store(out / "results.sqlite")
    try:
        rows = saved.rows("unlearning")
        described = {r["what"]: r["description"] for r in saved.rows("inputs")}
    finally:
        saved.close()
    assert len(rows) == 9 and {r["model"] for r in rows} == {"class/0"}
    assert described["model mine"].startswith("mymodels:build with")
    original = next(r for r in rows if r["method"] == "Original")
    assert original["UA"] < 0.5 and next(r for r in rows if r["method"] == "Retrain")["UA"] == 1.0
    capsys.readouterr()
    torch.save(models.small_cnn((1, 28, 28), 3, width=4).state_dict(), tmp_path / "three.pt")
    assert cli.main([*base[:-1], str(tmp_path / "other"), "--models",
                     f"x=mymodels:three@{tmp_path / 'three.pt'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradaudit: error: ") and err.count("\n") == 1 and "x" in err
