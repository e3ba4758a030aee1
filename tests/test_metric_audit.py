"""The audit of the metrics: Krippendorff's alpha against Krippendorff's worked example and the ``krippendorff``
package, the Sobel control against scipy, the per-image lists behind every metric's mean, and the audit's
verdicts on cases built to pass and to fool a metric."""

import math

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, snapshot
from nets import small_cnn
from scipy import ndimage
from scipy.stats import spearmanr
from torch import nn

import gradaudit as ga
from gradaudit import audit
from gradaudit.audit.metric_audit import krippendorff_alpha, metric_audit
from gradaudit.audit.results import AuditResult
from gradaudit.audit.stats import bca_interval
from gradaudit.methods.control import Sobel

NAN = math.nan
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers x 12 units, with gaps.
KRIPPENDORFF_2011 = [[1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
                     [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN]]


@pytest.mark.parametrize(("level", "published"), [("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_reproduces_krippendorffs_worked_example(level, published):
    """The published values alone: this test needs no package."""
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level), 3) == published


@pytest.mark.parametrize("level", ["ordinal", "interval"])
def test_krippendorff_alpha_equals_the_krippendorff_package_on_the_worked_example(level):
    import krippendorff

    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(
        krippendorff.alpha(reliability_data=np.array(KRIPPENDORFF_2011), level_of_measurement=level), abs=1e-12)


@pytest.mark.parametrize("level", ["ordinal", "interval"])
def test_krippendorff_alpha_is_one_for_agreement_and_chance_for_random_rankings(level):
    import krippendorff

    rng = np.random.default_rng(0)
    same = np.tile(rng.permutation(5).astype(float), (30, 1))                   # 30 raters, one ranking
    assert krippendorff_alpha(same, level) == pytest.approx(1.0, abs=1e-12)
    assert krippendorff.alpha(reliability_data=same, level_of_measurement=level) == pytest.approx(1.0, abs=1e-12)
    shuffled = np.stack([rng.permutation(5) for _ in range(400)]).astype(float)
    alpha = krippendorff_alpha(shuffled, level)
    assert abs(alpha) < 0.02
    assert alpha == pytest.approx(krippendorff.alpha(reliability_data=shuffled, level_of_measurement=level), abs=1e-9)
    reversed_pairs = np.array([[0.0, 1.0], [1.0, 0.0]] * 10)                    # raters who always disagree
    assert krippendorff_alpha(reversed_pairs, level) < 0
    assert math.isnan(krippendorff_alpha(np.ones((3, 4)), level))              # nothing to disagree about
    with pytest.raises(ValueError, match="level must be one of ordinal, interval"):
        krippendorff_alpha(same, "nominal")


def test_sobel_is_scipys_gradient_magnitude_of_the_channel_mean_and_ignores_the_model():
    x = torch.rand(3, 3, 9, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = small_cnn(channels=3)
    before = snapshot(net)
    edges = Sobel()(net, x)
    grey = x.mean(1).numpy()
    expected = np.stack([np.hypot(ndimage.sobel(g, axis=0), ndimage.sobel(g, axis=1)) for g in grey])
    assert edges.shape == x.shape and edges.dtype == torch.float64
    for channel in range(3):
        np.testing.assert_allclose(edges[:, channel].numpy(), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(Sobel()(net, x), edges)                        # deterministic
    assert torch.allclose(Sobel()(net, x.float()).double(), edges, atol=1e-5)
    assert_unchanged(net, before)
    with pytest.raises(ValueError, match=r"Sobel needs images \[B, C, H, W\]"):
        Sobel()(nn.Linear(5, 2).eval(), torch.rand(2, 5))


def _agree(row, column, n):
    values = row[f"{column}_each"]
    assert len(values) == n
    assert np.mean(values) == pytest.approx(row[column], abs=1e-12)


def test_every_metric_row_carries_the_per_image_values_of_its_means():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 1, 8, 8, generator=generator), torch.tensor([0, 1, 2, 0, 1, 2])
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 3:7] = True
    net = small_cnn()
    methods = {"Saliency": ga.Saliency(), "Sobel": Sobel()}
    for row in audit.insertion_deletion(methods, net, (x, y)).rows:
        _agree(row, "insertion", 6)
        _agree(row, "deletion", 6)
    for row in audit.pointing_game(methods, net, (x, y), masks=masks, tolerance=2).rows:
        _agree(row, "hit_rate", 6)
    for metric in ("relevance_mass", "relevance_rank"):
        for row in getattr(audit, metric)(methods, net, (x, y), masks=masks).rows:
            _agree(row, metric, 6)
    for row in audit.infidelity(methods, net, (x, y), samples=4).rows:
        _agree(row, "infidelity", 6)
    for row in audit.road(methods, net, (x, y), fractions=(0.5,)).rows:
        _agree(row, "morf_accuracy", 6)
        _agree(row, "lerf_accuracy", 6)
        assert set(row["morf_accuracy_each"]) <= {0.0, 1.0}


def _linear(weight: torch.Tensor, bias: float) -> nn.Module:
    """Logits (w.x + b, -(w.x + b)) of an 8 x 8 image."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([weight, -weight]))
        net[1].bias.copy_(torch.tensor([bias, -bias]))
    return net


def _deletion_row(net, x, truth):
    methods = {"Truth": truth, "Random": ga.Random(), "Sobel": Sobel()}
    result = audit.insertion_deletion(methods, net, (x, torch.zeros(len(x), dtype=torch.long)), probability=False)
    return next(r for r in metric_audit(result).rows if r["metric"] == "deletion")


def test_audit_passes_deletion_where_it_sees_true_contributions_and_flags_it_where_it_cannot():
    generator = torch.Generator().manual_seed(0)
    # Honest case: f = w.x with w > 0 and black as the reference, deletion's own substrate; the true
    # contributions w_i x_i fall fastest when deleted.
    weight = torch.rand(64, generator=generator)
    x = torch.rand(40, 1, 8, 8, generator=generator)
    honest = _deletion_row(_linear(weight, 0.0), x, (weight.view(8, 8) * x[:, 0]).abs())
    assert not honest["flagged"] and honest["separated"] == ["Truth"]
    assert all(v["difference_low"] > 0 for v in honest["versus_controls"])
    assert honest["ranking"][0] == "Truth"
    # Truth is first on every image, but the two controls fall in either order: alpha 0.75 [0.75, 0.80] reaches
    # Krippendorff's 0.667 and not 0.8, so the verdict is tentative, not trusted.
    assert 0.667 <= honest["alpha_low"] < 0.8 and honest["reliability"] == "tentative"
    assert honest["trust"] == "tentative" and "rankings tentatively reliable across images" in honest["reading"]
    assert "separates every method from Random and Sobel" in honest["reading"]
    # Built to fool deletion: f = w.(x - 1/2), w = +-1, on near-grey images. The true contributions are relative
    # to grey; deleting a pixel (to black) moves f by -w_i x_i ~ -w_i / 2 whatever its contribution, so the order
    # of the true map is no better than a random one.
    weight = torch.where(torch.rand(64, generator=generator) < 0.5, -1.0, 1.0)
    x = 0.5 + 0.05 * (2 * torch.rand(40, 1, 8, 8, generator=generator) - 1)
    fooled = _deletion_row(_linear(weight, -0.5 * weight.sum().item()), x, (weight.view(8, 8) * (x[:, 0] - 0.5)).abs())
    assert fooled["flagged"] and fooled["trust"] == "flagged" and fooled["separated"] == []
    assert "cannot tell any method from Random and Sobel here" in fooled["reading"]
    assert fooled["alpha_low"] < 0 < fooled["alpha_high"] and fooled["reliability"] == "not reliable"
    assert "rankings not reliable across images, not distinguishable from chance" in fooled["reading"]


def _result(audit_name, column, values, **settings):
    """An AuditResult whose rows hold ``values`` (method -> per-image list) of ``column``."""
    return AuditResult(audit_name, [{"method": m, **settings, column: float(np.mean(v)), f"{column}_each": list(v)}
                                    for m, v in values.items()])


def test_a_control_above_every_method_is_flagged_and_direction_is_respected():
    rng = np.random.default_rng(1)
    good = {"A": 1 + rng.normal(0, 0.1, 30), "B": 2 + rng.normal(0, 0.1, 30),
            "Random": rng.normal(0, 0.1, 30), "Sobel": 0.5 + rng.normal(0, 0.1, 30)}
    row = metric_audit(_result("custom", "score", good), directions={"score": "higher"}).rows[0]
    assert row["trust"] == "trusted" and row["ranking"] == ["B", "A", "Sobel", "Random"]
    assert row["alpha"] == pytest.approx(1.0) and row["alpha_low"] == pytest.approx(1.0)
    assert row["reliability"] == "reliable" and "rankings reliable across images" in row["reading"]
    assert row["means"]["B"] == pytest.approx(np.mean(good["B"]))
    flipped = metric_audit(_result("custom", "score", good), directions={"score": "lower"}).rows[0]
    assert flipped["flagged"] and flipped["ranking"] == ["Random", "Sobel", "A", "B"]
    assert flipped["flag"].startswith("ranks Random and Sobel above every method")
    difference = next(v for v in flipped["versus_controls"] if (v["method"], v["control"]) == ("A", "Random"))
    assert difference["difference"] == pytest.approx(np.mean(good["Random"] - good["A"]))   # oriented: lower better
    partial = {**good, "A": good["Random"] + rng.normal(0, 0.1, 30)}
    weak = metric_audit(_result("custom", "score", partial), directions={"score": "higher"}).rows[0]
    assert weak["trust"] == "weak" and weak["separated"] == ["B"]
    assert "separates B from the controls; scores A below a control (A vs Sobel: " in weak["reading"]
    blind = {**good, "A": good["Sobel"] + rng.normal(0, 0.1, 30), "Random": good["Sobel"] + rng.normal(0, 0.1, 30)}
    tied = metric_audit(_result("custom", "score", blind), directions={"score": "higher"}).rows[0]
    assert tied["trust"] == "weak"
    assert "separates B from the controls; cannot tell A from the controls" in tied["reading"]


def test_robustness_metrics_are_not_judged_by_the_controls():
    rng = np.random.default_rng(2)
    values = {"A": 0.5 + rng.normal(0, 0.05, 20), "Random": np.zeros(20), "Sobel": 0.01 + np.zeros(20)}
    row = metric_audit(_result("sensitivity_max", "sensitivity_max", values)).rows[0]
    assert not row["flagged"] and row["ranking"][0] == "Random"
    assert "robustness metric" in row["reading"] and "does not apply" in row["reading"]
    assert row["trust"] == "reported", "a metric reported, not judged, is not called trusted"


@pytest.mark.parametrize(("shuffled", "reliability", "trust", "words"), [
    (0, "reliable", "trusted", "rankings reliable across images"),
    (6, "tentative", "tentative", "rankings tentatively reliable across images"),
    (20, "not reliable", "weak", "rankings not reliable across images"),
])
def test_verdicts_follow_krippendorffs_thresholds_on_alphas_interval(shuffled, reliability, trust, words):
    """Eight methods above both controls on every image of 20, in one order except on ``shuffled`` images, where
    their order is a random permutation. Krippendorff: alpha >= 0.8 reliable, 0.667 <= alpha < 0.8 tentative,
    judged by the interval's lower bound; below, not reliable, whatever the metric's separation from the controls."""
    rng = np.random.default_rng(6)
    order = np.tile(np.arange(10.0)[::-1], (20, 1))
    for image in range(shuffled):
        order[image, :8] = rng.permutation(order[image, :8])
    names = [f"M{i}" for i in range(8)] + ["Sobel", "Random"]
    values = {m: order[:, i] + rng.normal(0, 0.01, 20) for i, m in enumerate(names)}
    row = metric_audit(_result("custom", "score", values), directions={"score": "higher"}).rows[0]
    assert row["separated"] == names[:8] and not row["flagged"]
    assert row["reliability"] == reliability and row["trust"] == trust and words in row["reading"]
    if reliability == "tentative":
        assert 0.667 <= row["alpha_low"] < 0.8
    if reliability == "not reliable":
        assert row["alpha_high"] < 0.667 and "below 0.667" in row["reading"]


def test_the_bca_interval_equals_scipys_given_the_same_resamples():
    from scipy.stats import bootstrap

    data = np.random.default_rng(1).exponential(size=25)                  # skewed: BCa differs from percentile
    theirs = bootstrap((data,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(7))
    resamples = np.random.default_rng(7).integers(0, 25, (2000, 25))   # scipy's draw, in its order
    ours = bca_interval(data.mean(), data[resamples].mean(1), [np.delete(data, i).mean() for i in range(25)])
    assert ours == pytest.approx(tuple(theirs.confidence_interval), abs=1e-12)


def test_alphas_interval_near_one_is_corrected_for_the_bootstraps_upward_lean():
    """Six images rank nine methods alike except two adjacent swaps. A resample duplicates images, and a duplicated
    image agrees with itself, so the resamples lean above the estimate: (4/6)^6 = 8.8% of them hold neither
    swapped image and have alpha = 1, so the percentile interval's upper end is 1. The bias-corrected interval
    shifts both ends down and still holds the estimate."""
    ranks = torch.arange(9.0).repeat(6, 1)
    for image in range(2):
        ranks[image, [3 + image, 4 + image]] = ranks[image, [4 + image, 3 + image]]
    names = [f"M{u}" for u in range(7)] + ["Sobel", "Random"]
    values = {m: (10 - ranks[:, u]).numpy() for u, m in enumerate(names)}
    row = metric_audit(_result("custom", "score", values), directions={"score": "higher"}).rows[0]
    assert row["alpha"] == pytest.approx(krippendorff_alpha(ranks)) and 0.98 < row["alpha"] < 0.99
    assert row["alpha_low"] <= row["alpha"] <= row["alpha_high"] < 1


def test_agreement_between_metrics_is_spearman_of_the_oriented_mean_rankings():
    rng = np.random.default_rng(3)
    base = {m: mean + rng.normal(0, 0.05, 25) for m, mean in zip(["A", "B", "C", "Random", "Sobel"],
                                                                   [0.9, 0.7, 0.5, 0.1, 0.3], strict=True)}
    results = {"ins": _result("insertion_deletion", "insertion", base),
               "del": _result("insertion_deletion", "deletion", {m: 1 - v for m, v in base.items()}),
               "odd": _result("custom", "odd", {**base, "A": base["B"], "B": base["A"]})}
    audited = metric_audit(results, directions={"odd": "higher"})
    rows = {r["metric"]: r for r in audited.rows}
    assert rows["insertion"]["agreement"]["deletion"] == pytest.approx(1.0)      # lower deletion = better
    expected = spearmanr([0.9, 0.7, 0.5, 0.1, 0.3], [0.7, 0.9, 0.5, 0.1, 0.3]).statistic
    assert rows["insertion"]["agreement"]["odd"] == pytest.approx(expected)
    assert rows["insertion"]["agreement_low"]["odd"] <= expected <= rows["insertion"]["agreement_high"]["odd"]
    assert len(audited.extra["agreement"]) == 3


def test_settings_that_vary_within_a_method_make_separate_metrics():
    rng = np.random.default_rng(5)
    rows = [{"method": m, "neighbourhood": hood, "label": f"{m} map",           # label: one text per method
             "unexplained_each": (mean + rng.normal(0, 0.05, 12)).tolist()}
            for hood in ("shap", "gaussian:0.3") for m, mean in (("IG", 0.2), ("Random", 0.9), ("Sobel", 0.8))]
    audited = metric_audit(AuditResult("local_faithfulness", rows))
    assert [r["metric"] for r in audited.rows] == ["unexplained[neighbourhood=shap]",
                                                   "unexplained[neighbourhood=gaussian:0.3]"]
    assert all(r["trust"] == "trusted" and r["direction"] == "lower" for r in audited.rows)
    assert audited.extra["agreement"][0]["spearman"] == pytest.approx(1.0)


def _correct(rng, share, n=50):
    """n per-image 0/1 values, exactly ``share`` of them 1, in a random order."""
    return rng.permutation([1.0] * round(share * n) + [0.0] * (n - round(share * n))).tolist()


@pytest.mark.parametrize(("lerf", "expected", "words"), [((0.9, 0.8, 0.6, 0.7), 1.0, "MoRF and LeRF agree"),
                                                         ((0.6, 0.7, 0.9, 0.8), -1.0, "MoRF and LeRF disagree")])
def test_road_morf_and_lerf_agreement_over_fractions(lerf, expected, words):
    rng = np.random.default_rng(4)
    morf = (0.2, 0.4, 0.7, 0.6)                                  # lower is better: A, B, Sobel, Random
    rows = [{"model": "net", "method": m, "fraction": fraction, "morf_accuracy_each": _correct(rng, mo),
             "lerf_accuracy_each": _correct(rng, le)}
            for fraction in (0.1, 0.5) for m, mo, le in zip(["A", "B", "Random", "Sobel"], morf, lerf, strict=True)]
    audited = metric_audit(AuditResult("road", rows))
    row = next(r for r in audited.rows if r["metric"] == "morf_accuracy")
    assert row["direction"] == "lower" and row["images"] == 50 and row["ranking"] == ["A", "B", "Sobel", "Random"]
    assert row["means"]["A"] == pytest.approx(0.2)
    assert row["morf_lerf"] == pytest.approx(expected) and words in row["reading"]
    assert [r["fraction"] for r in audited.extra["morf_lerf"]] == ["mean", 0.1, 0.5]
    assert all(r["spearman"] == pytest.approx(expected) for r in audited.extra["morf_lerf"])


def test_metric_audit_rejects_bad_input():
    values = {"A": [1.0, 2.0], "Random": [0.0, 0.5]}
    with pytest.raises(ValueError, match="needs at least one control"):
        metric_audit(_result("insertion_deletion", "insertion", values), controls=("Sobel",))
    with pytest.raises(ValueError, match="no direction known for the metric column 'score'"):
        metric_audit(_result("custom", "score", values))
    with pytest.raises(ValueError, match="directions must map columns to 'higher' or 'lower'"):
        metric_audit(_result("custom", "score", values), directions={"score": "up"})
    with pytest.raises(ValueError, match="different lengths"):
        metric_audit(_result("insertion_deletion", "insertion", {"A": [1.0, 2.0], "Random": [0.0]}))
    with pytest.raises(ValueError, match="no per-image values"):
        metric_audit(AuditResult("insertion_deletion", [{"method": "A", "insertion": 1.0}]))
    with pytest.raises(TypeError, match="results must be AuditResults"):
        metric_audit([{"method": "A"}])
    with pytest.raises(ValueError, match="resamples must be a positive integer"):
        metric_audit(_result("insertion_deletion", "insertion", values), resamples=0)
