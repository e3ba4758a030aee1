"""Audits against known answers: an oracle map, Random, linear models, and the store."""

from dataclasses import dataclass

import pytest
import torch
from helpers import assert_unchanged, snapshot
from scipy import stats
from torch import nn

import gradaudit as ga
from gradaudit import audit, data, models, train
from gradaudit.audit.common import keep_masks, pearson, rank_pixels, spearman
from gradaudit.audit.roar import saturated, tied_share
from gradaudit.store import Store


@dataclass(frozen=True)
class Oracle(ga.Method):
    """Attributes exactly the signal block: the ground-truth answer (for BlockMNIST inputs)."""

    needs_gradients = False

    def _explain(self, model, x, target, chunk):
        mask = torch.zeros_like(x)
        top = x[:, :, 28:].sum((1, 2, 3)) == ORACLE_NULL_SUM   # the lower block is the null pattern
        mask[top, :, :28] = 1
        mask[~top, :, 28:] = 1
        return mask


ORACLE_NULL_SUM = data.null_pattern().sum().item()


@pytest.fixture(scope="module")
def blocks():
    return data.blockmnist("train", copies=1), data.blockmnist("test", copies=1)


@pytest.fixture(scope="module")
def net(blocks):
    torch.manual_seed(0)
    return train.fit(models.small_cnn((1, 56, 28), 2, width=4), blocks[0], epochs=1, progress=False)


def test_signal_mass_of_oracle_random_and_store(blocks, net, tmp_path):
    store = Store(tmp_path / "r.sqlite")
    result = audit.signal_mass({"oracle": Oracle(), "random": ga.Random()}, net, blocks[1], store=store)
    rows = {r["method"]: r for r in result.rows}
    assert rows["oracle"]["signal_mass"] == pytest.approx(1.0) and rows["oracle"]["top_in_signal"] == 1.0
    assert rows["random"]["signal_mass"] == pytest.approx(0.5, abs=0.02)
    assert rows["random"]["top_in_signal"] == pytest.approx(0.5, abs=0.03)
    assert len(store.rows("signal_mass")) == 2
    again = audit.signal_mass({"oracle": Oracle()}, net, blocks[1], store=store)
    assert again.rows[0] == rows["oracle"] and len(store.rows("signal_mass")) == 2
    assert list(result.table().columns)[:2] == ["model", "method"]


def test_ranking_and_masks():
    scores = torch.tensor([[0.3, 0.0, 0.9, 0.0, 0.5]])
    ranks = rank_pixels(scores)
    assert ranks[0, 2] == 4 and ranks[0, 4] == 3 and ranks[0, 0] == 2
    assert set(ranks[0, [1, 3]].tolist()) == {0, 1}
    assert keep_masks(ranks, 0.4, top=True).tolist() == [[False, False, True, False, True]]
    assert keep_masks(ranks, 0.4, top=False)[0, [1, 3]].all()
    flat = torch.zeros(1, 1000)
    assert rank_pixels(flat)[0, :500].float().mean() == pytest.approx(500, rel=0.1)  # ties are not ordered by position


def test_diffroar_ranks_the_oracle_above_random(blocks, net, tmp_path):
    store = Store(tmp_path / "r.sqlite")

    def fn():                       # big enough to converge in 4 epochs: less retraining noise
        return models.mlp((1, 56, 28), 2, hidden=32)

    result = audit.diffroar({"oracle": Oracle(), "random": ga.Random()}, net, *blocks, model_fn=fn,
                            fractions=(0.1,), repeats=2, epochs=4, fill=0.0, store=store, progress=False)
    table = result.table().groupby("method").diffroar.mean()
    assert table["oracle"] > 0.3 and abs(table["random"]) < 0.1
    assert len(store.rows("diffroar")) == 4
    rows_before = store.rows("diffroar")
    audit.diffroar({"oracle": Oracle(), "random": ga.Random()}, net, *blocks, model_fn=fn, fractions=(0.1,),
                   repeats=2, epochs=4, fill=0.0, store=store, progress=False)
    assert store.rows("diffroar") == rows_before
    # resume with repeat 0 already stored: repeat 1, trained alone, equals the uninterrupted run's
    resumed = Store(tmp_path / "resumed.sqlite")
    first = next(r for r in rows_before if r["method"] == "oracle" and r["repeat"] == 0)
    resumed.put("diffroar", {k: first[k] for k in ("model", "method", "fraction", "repeat")}, first)
    again = audit.diffroar({"oracle": Oracle()}, net, *blocks, model_fn=fn, fractions=(0.1,), repeats=2, epochs=4,
                           fill=0.0, store=resumed, progress=False)
    assert [r["diffroar"] for r in again.rows] == [r["diffroar"] for r in rows_before if r["method"] == "oracle"]


def _ranked_by(scores, keep, top):
    """Per image, whether the pixels ``keep`` [N, P] kept are the ``top`` (else bottom) ones by ``scores``
    [N, P]: every kept score >= (<=) every removed one (1e-6 slack for rounding; ties may go either way)."""
    kept_low = torch.where(keep, scores, torch.inf).min(1).values
    kept_high = torch.where(keep, scores, -torch.inf).max(1).values
    removed_low = torch.where(keep, torch.inf, scores).min(1).values
    removed_high = torch.where(keep, -torch.inf, scores).max(1).values
    return kept_low >= removed_high - 1e-6 if top else kept_high <= removed_low + 1e-6


def test_blur_control_adds_a_blurred_variant(blocks, net, monkeypatch):
    from gradaudit.audit import roar

    trained_on = []                                      # each variant's keep-masks [top, bottom] of the training set
    fit = roar.fit_ensemble

    def spy_fit(model_fn, x, y, keep, *args, **kwargs):
        if keep is not None:                             # a variant's retraining (the ceiling is trained unmasked)
            trained_on.append(keep.flatten(2))
        return fit(model_fn, x, y, keep, *args, **kwargs)

    monkeypatch.setattr(roar, "fit_ensemble", spy_fit)
    result = audit.diffroar({"oracle": Oracle()}, net, *blocks, model_fn=lambda: models.mlp((1, 56, 28), 2, hidden=8),
                            fractions=(0.1,), repeats=1, epochs=1, fill=0.0, blur_control=True, progress=False)
    assert [r["method"] for r in result.rows] == ["oracle", "oracle+blur"]
    # The oracle's map is 1 on the signal block and 0 elsewhere; blurred (sigma 2, as diffroar) it stays 1
    # only 6+ rows away from the other block, so its top 10% avoid the rows next to the block boundary
    # that a ranking by the raw map (1 on the whole block) picks at random.
    raw = Oracle()(net, blocks[0].x)[:, 0]
    smooth = audit.blurred(raw)
    raw, smooth = raw.flatten(1), smooth.flatten(1)
    assert len(trained_on) == 2
    for variant, scores, masks in (("oracle", raw, trained_on[0]), ("oracle+blur", smooth, trained_on[1])):
        for keep, top in zip(masks, (True, False), strict=True):
            ok = _ranked_by(scores, keep, top)
            assert ok.all(), f"{variant} {'top' if top else 'bottom'}: {int((~ok).sum())}/{len(ok)} images misranked"
    assert _ranked_by(smooth, trained_on[0][0], top=True).float().mean() < 0.1   # raw ranking != blurred ranking
    assert (trained_on[1][0] != trained_on[0][0]).any(1).all()
    assert torch.allclose(audit.blurred(torch.full((1, 9, 9), 0.3), sigma=1.0), torch.full((1, 9, 9), 0.3))
    spike = torch.zeros(1, 15, 15)
    spike[0, 7, 7] = 1.0
    smooth = audit.blurred(spike, sigma=1.0)
    assert smooth.sum().item() == pytest.approx(1.0, rel=1e-5) and smooth.max() < 0.2 and smooth[0, 7, 8] > 0.05


def test_class_sensitivity_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double().eval()
    dataset = type("D", (), {"x": torch.randn(5, 1, 4, 4, dtype=torch.float64)})()
    result = audit.class_sensitivity({"saliency": ga.Saliency(), "random": ga.Random()}, model, dataset)
    rows = {r["method"]: r for r in result.rows}
    logits = model(dataset.x)
    w = model[1].weight.detach().abs()                      # the Saliency map of class c is |w_c|
    pairs = zip(logits.argmax(1), logits.argmin(1), strict=True)
    expected = [stats.spearmanr(w[hi], w[lo]).statistic for hi, lo in pairs]
    assert rows["saliency"]["correlation"] == pytest.approx(sum(expected) / len(expected))
    assert rows["saliency"]["correlation_low"] < rows["saliency"]["correlation"] < rows["saliency"]["correlation_high"]
    assert rows["random"]["correlation"] == pytest.approx(1.0)   # the same map whatever the class


def test_randomization_cascades_and_leaves_the_model_alone(blocks, net):
    before = snapshot(net)
    result = audit.randomization({"saliency": ga.Saliency(), "random": ga.Random()}, net, blocks[1], limit=20)
    assert_unchanged(net, before)
    rows = result.table()
    assert rows.randomized.tolist()[:3] == ["fc", "fc+conv2", "fc+conv2+conv1"]
    assert (rows[rows.method == "random"].spearman == 1.0).all()
    saliency = rows[rows.method == "saliency"].spearman.tolist()
    assert saliency[-1] < 0.5 and saliency[-1] < saliency[0]


def test_correlations():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert pearson(a, 2 * a + 1).item() == pytest.approx(1.0)
    assert spearman(a, a**3).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    generator = torch.Generator().manual_seed(0)
    tied = torch.randint(0, 3, (4, 40), generator=generator).float()     # many ties: mean ranks, as scipy
    other = torch.randint(0, 3, (4, 40), generator=generator).float()
    expected = [stats.spearmanr(tied[i], other[i]).statistic for i in range(4)]
    assert spearman(tied, other).tolist() == pytest.approx(expected)


def test_saturation_and_ties():
    assert saturated(1.0, 0.995, ceiling=1.0, chance=0.5) and saturated(0.505, 0.5, ceiling=1.0, chance=0.5)
    assert not saturated(1.0, 0.9, ceiling=1.0, chance=0.5) and not saturated(0.98, 0.985, ceiling=1.0, chance=0.5)
    maps = torch.tensor([[0.0, 0.0, 0.0, 0.5], [0.1, 0.2, 0.3, 0.4]])
    assert tied_share(maps) == pytest.approx((0.75 + 0.0) / 2)


def test_blockmnist_top_puts_every_signal_on_top():
    random_layout = data.blockmnist("test", copies=1)
    top = data.blockmnist("test", copies=1, position="top")
    assert top.signal_on_top.all() and top.signal_mask[:, 0, :28].all() and not top.signal_mask[:, 0, 28:].any()
    assert torch.equal(top.y, random_layout.y)
    on_top = random_layout.signal_on_top.view(-1, 1, 1, 1)
    digits = torch.where(on_top, random_layout.x[:, :, :28], random_layout.x[:, :, 28:])
    assert torch.equal(top.x[:, :, :28], digits)                  # the same digits, always in the top block
    with pytest.raises(ValueError, match="position must be 'random' or 'top'"):
        data.blockmnist("test", position="left")


def test_store_is_parameterised_and_idempotent(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    evil = {"method": "x'); DROP TABLE results; --", "k": 1}
    store.put("diffroar", evil, {"value": 1})
    store.put("diffroar", evil, {"value": 2})
    assert store.get("diffroar", evil)["value"] == 1 and len(store.rows("diffroar")) == 1
    assert store.get("diffroar", {"method": "other", "k": 1}) is None
    assert store.audits() == ["diffroar"]
