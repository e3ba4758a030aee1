"""The checks of training-data attribution against retraining (``audit.influence_checks``): leave-one-out on a
convex model, where ``exact`` is Koh & Liang's influence and must predict the actual change of the query loss;
the LDS and mislabel detection, where the strategies must beat the random-score control; resumes from the
store without retraining; the binomial interval against scipy; errors."""

import pytest
import torch
from helpers import assert_unchanged, snapshot
from scipy import stats as scipy_stats
from sklearn.datasets import load_digits
from torch import nn

from gradaudit import train
from gradaudit.audit import influence_checks as checks
from gradaudit.store import Store
from gradaudit.units import LocalExecutor

RECIPE = {"optimizer": "adam", "lr": 0.05, "epochs": 30, "batch_size": 64}


def _digits(classes=10):
    """The 8x8 digits bundled with scikit-learn, pixels in [0, 1], [N, 1, 8, 8]."""
    found = load_digits()
    keep = torch.tensor(found.target) < classes
    return torch.tensor(found.images / 16.0, dtype=torch.float32)[keep][:, None], torch.tensor(found.target)[keep]


def _logistic():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _by_method(result):
    return {row["method"]: row for row in result.rows}


def test_leave_one_out_retraining_follows_exact_influence_and_not_random_scores(tmp_path, monkeypatch):
    """Logistic regression with the L2 penalty l2 = damping: ``exact`` is the inverse Hessian of the objective,
    so score / N is the first-order change of the query loss when an example is left out (Koh & Liang)."""
    x, y = _digits(classes=3)
    store = Store(tmp_path / "results.sqlite")
    result = checks.loo_correlation((x[:150], y[:150]), (x[300:308], y[300:308]), strategies=("exact",),
                                    removals=20, store=store)
    rows = _by_method(result)
    assert set(rows) == {"exact", "random", "identity"}
    assert rows["exact"]["pearson"] > 0.95 and rows["exact"]["pearson_low"] > 0.9
    assert rows["exact"]["spearman"] > 0.9
    # score / N has the scale of the change: measured slope 1.11 [1.07, 1.14] (per query 1.05 to 1.19; above 1 as
    # leaving out is more than the first-order step); a factor 2 either way, or 20% low, falls outside
    assert 1.0 < rows["exact"]["slope_low"] and rows["exact"]["slope_high"] < 1.25, rows["exact"]["slope_each"]
    assert abs(rows["random"]["pearson"]) < 0.3
    assert rows["exact"]["pearson_low"] > rows["random"]["pearson_high"]
    assert rows["exact"]["max_gradient_norm"] < 1e-6               # retrained to convergence
    assert len(rows["exact"]["pearson_each"]) == 8 == rows["exact"]["queries"]

    def fail(*args, **kwargs):
        raise AssertionError("a stored leave-one-out result was recomputed")

    monkeypatch.setattr(checks, "logistic_regression", fail)
    again = checks.loo_correlation((x[:150], y[:150]), (x[300:308], y[300:308]), strategies=("exact",),
                                   removals=20, store=store)
    assert again.rows == result.rows
    store.close()


def test_logistic_regression_reaches_the_penalised_optimum():
    x, y = _digits(classes=3)
    flat = x[:60].flatten(1)
    theta, norm = checks.logistic_regression(flat, y[:60], 3, 0.1)
    assert norm < 1e-7
    theta = theta.clone().requires_grad_(True)
    design = torch.cat([flat.double(), torch.ones(60, 1, dtype=torch.float64)], 1)
    objective = torch.nn.functional.cross_entropy(design @ theta.T, y[:60]) + 0.05 * theta.square().sum()
    gradient, = torch.autograd.grad(objective, theta)
    assert gradient.abs().max() < 1e-7


class CountingExecutor(LocalExecutor):
    """Runs units here, counting them: the retraining goes through the executor handed in."""

    def __init__(self):
        self.units = 0

    def run(self, units, on_result):
        self.units += len(units)
        super().run(units, on_result)


def test_lds_of_exact_and_ekfac_is_above_the_random_control_and_resumes(tmp_path, monkeypatch):
    x, y = _digits()
    train_set, queries = (x[:200], y[:200]), (x[1000:1016], y[1000:1016])
    torch.manual_seed(0)
    model = train.fit(_logistic(), train_set, seed=0, progress=False, **RECIPE)
    before = snapshot(model)
    executor, store = CountingExecutor(), Store(tmp_path / "results.sqlite")
    result = checks.lds(model, train_set, queries, ("exact", "ekfac"), model_fn=_logistic, subsets_count=12,
                        damping=0.01, store=store, executor=executor, progress=False, **RECIPE)
    assert_unchanged(model, before)
    rows = _by_method(result)
    assert set(rows) == {"exact", "ekfac", "random", "identity"}
    assert executor.units == 12                                   # one unit per subset
    for name in ("exact", "ekfac"):
        assert rows[name]["lds_low"] > rows["random"]["lds_high"], (name, rows[name]["lds"], rows["random"]["lds"])
    assert abs(rows["random"]["lds"]) < 0.3
    assert len(rows["exact"]["lds_each"]) == 16

    def fail(*args, **kwargs):
        raise AssertionError("a stored subset was retrained")

    monkeypatch.setattr(checks.train, "fit_ensemble", fail)
    assert checks.lds(model, train_set, queries, ("exact", "ekfac"), model_fn=_logistic, subsets_count=12,
                      damping=0.01, store=store, progress=False, **RECIPE).rows == result.rows
    store.close()


class Margins(nn.Module):
    """Logits [0, -a_q] for the query whose one feature is its index q: the margin at label 0 is a_q."""

    def __init__(self, a):
        super().__init__()
        self.register_buffer("a", a)

    def forward(self, x):
        a = self.a[x[:, 0].long()]
        return torch.stack([torch.zeros_like(a), -a], 1)


def test_lds_equals_spearman_by_hand_on_fixed_scores_and_margins(monkeypatch):
    """Precomputed scores used as given, and retraining replaced by fixed outputs: the model trained on subset S
    with seed s has the query margin a_q(S) + e_q(s), a_q a cubic of a noisy sum over the examples in S
    (monotone, far from linear: Pearson gives another number), e_q(s) seed noise. The LDS of each query is then
    scipy's Spearman correlation, over the subsets, between sum_{m in S} score[q, m] and the margin averaged over
    the subset's ``lds_seeds`` models; ``paired`` is the mean and t interval of the per-query differences."""
    n, q, count, repeats = 40, 5, 8, 3
    g = torch.Generator().manual_seed(1)              # not 0: the random control's draws
    scores, noise = torch.randn(q, n, generator=g, dtype=torch.float64), torch.randn(q, n, generator=g,
                                                                                      dtype=torch.float64)
    x, y = torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 2
    queries = (torch.arange(q, dtype=torch.float32)[:, None], torch.zeros(q, dtype=torch.long))
    trained_on, seeds_of = [], []

    def margin(members, seed):                                          # a_q(S) + e_q(s) [Q]
        wobble = torch.randn(q, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return (scores[:, members].sum(1) + noise[:, members].sum(1) / 2).div(5) ** 3 + wobble / 2

    def fit_ensemble(model_fn, xs, ys, keep, fill, seeds, *args, **kwargs):
        members = xs[:, 0].long()
        trained_on.append(members)
        seeds_of.append(list(seeds))
        return [Margins(margin(members, s)) for s in seeds]

    monkeypatch.setattr(checks.train, "fit_ensemble", fit_ensemble)
    subsets = checks.subsets(n, 0.5, count, 0)
    assert all(len(s) == n // 2 and len(set(s.tolist())) == n // 2 for s in subsets)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 2)).eval()
    result = checks.lds(model, (x, y), queries, {"mine": scores}, model_fn=_logistic, subsets_count=count,
                        lds_seeds=repeats, executor=LocalExecutor(), progress=False, epochs=1)
    rows = _by_method(result)
    mine = rows["mine"]
    assert len(trained_on) == count and all(len(set(s)) == repeats for s in seeds_of)
    inside = torch.zeros(count, n, dtype=torch.bool)
    for j, members in enumerate(trained_on):
        inside[j, members] = True
    predicted = (scores[:, None, :] * inside).sum(2)                                      # [Q, J]
    actual = torch.stack([torch.stack([margin(m, s) for s in seeds]).mean(0)
                          for m, seeds in zip(trained_on, seeds_of, strict=True)], 1)     # [Q, J]
    by_hand = [scipy_stats.spearmanr(predicted[i], actual[i]).statistic for i in range(q)]
    assert mine["lds_each"] == pytest.approx(by_hand, abs=1e-12)
    assert mine["lds"] == pytest.approx(sum(by_hand) / q, abs=1e-12)
    assert sum(by_hand) / q > 0.3                                               # informative, not chance
    pearson = [scipy_stats.pearsonr(predicted[i], actual[i]).statistic for i in range(q)]
    assert max(abs(p - h) for p, h in zip(pearson, by_hand, strict=True)) > 0.05   # Pearson would not pass
    first = torch.stack([margin(m, seeds[0]) for m, seeds in zip(trained_on, seeds_of, strict=True)], 1)
    one_seed = [scipy_stats.spearmanr(predicted[i], first[i]).statistic for i in range(q)]
    assert max(abs(a - b) for a, b in zip(one_seed, by_hand, strict=True)) > 1e-3   # the seeds were averaged
    differences = [a - b for a, b in zip(by_hand, rows["random"]["lds_each"], strict=True)]
    lead = checks.paired(result.rows, "lds", "mine", "random")
    half = scipy_stats.t.ppf(0.975, q - 1) * scipy_stats.tstd(differences) / q ** 0.5
    assert (lead.mean, lead.low, lead.high, lead.n) == pytest.approx(
        (sum(differences) / q, sum(differences) / q - half, sum(differences) / q + half, q), abs=1e-12)
    with pytest.raises(ValueError, match=r"precomputed scores must have shape \[queries, train examples\] = \[5, 40\]"):
        checks.lds(model, (x, y), queries, {"mine": torch.zeros(5, 39)}, model_fn=_logistic, subsets_count=3,
                   progress=False, epochs=1)


def test_margins_are_the_log_odds_of_the_label():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 2])
    p = logits.softmax(1).gather(1, y[:, None])[:, 0]
    assert torch.allclose(checks.margins(logits, y), torch.log(p / (1 - p)), atol=1e-12)


def test_mislabel_detection_finds_flips_above_the_random_rate():
    x, y = _digits()
    result = checks.mislabel_detection((x[:400], y[:400]), ("ekfac",), model_fn=_logistic, fraction=0.1, seeds=(0,),
                                       damping=0.01, progress=False, **RECIPE)
    rows = _by_method(result)
    assert set(rows) == {"ekfac", "random", "identity"}
    for name in ("ekfac", "identity"):
        assert rows[name]["flipped"] == 40 and rows[name]["random_rate_10"] == 0.1
        assert rows[name]["found_10_low"] > 0.1, (name, rows[name]["found_10"])      # above the random rate
        assert rows[name]["found_20"] >= rows[name]["found_10"]
    assert rows["random"]["found_10"] < 0.3
    assert len(rows["ekfac"]["found_10_each"]) == 40


def test_flipped_labels_all_change_and_nothing_else_does():
    y = torch.arange(50) % 4
    noisy, flipped = checks.flip_labels(y, 0.2, 4, seed=3)
    assert len(flipped) == 10 and (noisy[flipped] != y[flipped]).all()
    kept = torch.ones(50, dtype=torch.bool)
    kept[flipped] = False
    assert torch.equal(noisy[kept], y[kept]) and noisy.max() < 4


@pytest.mark.parametrize(("found", "n"), [(0, 20), (7, 20), (20, 20), (3, 40)])
def test_binomial_interval_is_clopper_pearson(found, n):
    interval = checks.binomial_interval(found, n)
    expected = scipy_stats.binomtest(found, n).proportion_ci(confidence_level=0.95, method="exact")
    assert interval.mean == found / n and interval.n == n
    assert interval.low == pytest.approx(expected.low, abs=1e-12)
    assert interval.high == pytest.approx(expected.high, abs=1e-12)


def test_verdicts_follow_paired_intervals():
    rows = [{"model": "cnn", "method": "ekfac", "lds_each": [0.6, 0.7, 0.65, 0.7]},
            {"model": "cnn", "method": "identity", "lds_each": [0.6, 0.72, 0.64, 0.69]},
            {"model": "cnn", "method": "random", "lds_each": [0.0, -0.1, 0.1, 0.05]}]
    lines = checks.verdicts({"lds": rows})
    assert lines[0].startswith("cnn: ekfac is not distinguishable from identity on the LDS")
    assert lines[1].startswith("cnn: ekfac beats random on the LDS (difference +0.")


def test_bad_settings_are_clear_errors():
    x, y = _digits(classes=3)
    data = (x[:30], y[:30])
    with pytest.raises(ValueError, match="l2 must be a number > 0"):
        checks.loo_correlation(data, data, l2=0)
    with pytest.raises(ValueError, match="unknown strategy 'magic'; choose from identity, diagonal"):
        checks.loo_correlation(data, data, strategies=("magic",))
    with pytest.raises(ValueError, match="removals must be an integer >= 3"):
        checks.loo_correlation(data, data, removals=1)
    with pytest.raises(ValueError, match="queries have 16 features per example; the training examples 64"):
        checks.loo_correlation(data, (x[:3, :, :4, :4], y[:3]))
    with pytest.raises(ValueError, match="alpha must be a share in"):
        checks.lds(_logistic(), data, data, model_fn=_logistic, alpha=1.0)
    with pytest.raises(ValueError, match="subsets_count must be an integer >= 3"):
        checks.lds(_logistic(), data, data, model_fn=_logistic, subsets_count=2)
    with pytest.raises(ValueError, match="lds_seeds must be an integer >= 1"):
        checks.lds(_logistic(), data, data, model_fn=_logistic, lds_seeds=0)
    with pytest.raises(ValueError, match="fraction must be a share in"):
        checks.mislabel_detection(data, model_fn=_logistic, fraction=0)
    with pytest.raises(ValueError, match="strategies must be names, not scores"):
        checks.mislabel_detection(data, {"mine": torch.zeros(30)}, model_fn=_logistic)


class Support(nn.Module):
    """Query q (its one feature is q) keeps label 0 while at least need[q] of its support examples
    (support[q] [N] bool) are among the examples this model was "trained" on (``kept`` [N] bool)."""

    def __init__(self, support, need, kept):
        super().__init__()
        self.support, self.need, self.kept = support, need, kept

    def forward(self, x):
        q = x[:, 0].long()
        count = (self.support[q] & self.kept).sum(1).double()
        return torch.stack([count - self.need[q] + 0.5, torch.zeros_like(count)], 1)


def test_brittleness_finds_the_known_smallest_removal_and_resumes(tmp_path, monkeypatch):
    """A constructed case with a known answer: query q stays correct while need[q] of its support[q] examples
    remain, so removing its top-k by oracle scores (support first) flips it at the smallest grid k above
    |support| - need; random scores need more removals (or none flips); a stored run is not retrained."""
    from gradaudit.audit import brittleness

    n, q = 30, 4
    support = torch.zeros(q, n, dtype=torch.bool)
    for i, members in enumerate(([0, 1, 2], [3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13])):
        support[i, members] = True
    need = torch.tensor([1.0, 2.0, 1.0, 3.0])                       # flips once 3, 4, 2, 2 are gone
    x, y = torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n, dtype=torch.long)
    queries = (torch.arange(q, dtype=torch.float32)[:, None], torch.zeros(q, dtype=torch.long))
    retrained = []

    def fit_ensemble(model_fn, xs, ys, keep, fill, seeds, *args, **kwargs):
        kept = torch.zeros(n, dtype=torch.bool)
        kept[xs[:, 0].long()] = True
        retrained.append(int((~kept).sum()))
        return [Support(support, need, kept) for _ in seeds]

    monkeypatch.setattr(checks.train, "fit_ensemble", fit_ensemble)
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0]))                   # every query correct (label 0)
    model.eval()
    oracle = support.double() + torch.rand(q, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64) / 10
    store = Store(tmp_path / "results.sqlite")
    ks = (1, 2, 3, 4, 5, 6)
    result = brittleness(model, (x, y), queries, {"oracle": oracle}, model_fn=_logistic, ks=ks, retrain_seeds=2,
                         store=store, progress=False, epochs=1)
    rows = _by_method(result)
    assert set(rows) == {"oracle", "random", "identity"}
    assert rows["oracle"]["smallest_k_each"] == [3, 4, 2, 2]
    assert rows["oracle"]["flipped"] == 1 and rows["oracle"]["queries"] == 4
    assert rows["oracle"]["smallest_k"] == pytest.approx(11 / 4)
    assert all(r >= o for r, o in zip(rows["random"]["smallest_k_each"], [3, 4, 2, 2], strict=True))
    assert max(rows["random"]["smallest_k_each"]) == 12 or rows["random"]["smallest_k"] > 11 / 4  # 2 x max k: never
    assert retrained[:3] == [1, 2, 3]                          # the grid is scanned upwards, stopping at the flip
    monkeypatch.setattr(checks.train, "fit_ensemble", lambda *a, **k: pytest.fail("a stored removal was retrained"))
    assert brittleness(model, (x, y), queries, {"oracle": oracle}, model_fn=_logistic, ks=ks, retrain_seeds=2,
                       store=store, progress=False, epochs=1).rows == result.rows
    store.close()
    with pytest.raises(ValueError, match="ks must be removal counts between 1 and 29"):
        brittleness(model, (x, y), queries, {"oracle": oracle}, model_fn=_logistic, ks=(5, 30), progress=False)
    with pytest.raises(ValueError, match="gets none of the 4 right"):
        brittleness(_wrong(), (x, y), queries,
                    {"oracle": oracle}, model_fn=_logistic, ks=ks, progress=False)


def _wrong():
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, 1.0]))
    return model.eval()
