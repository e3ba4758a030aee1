"""Verdict sentences follow their intervals: on hand-made rows, and on the tiny preset at three seeds."""

import pytest
from scipy import stats

from gradaudit.jobs.audit import run
from gradaudit.jobs.presets import COMMANDS
from gradaudit.report.reading import claims
from gradaudit.store import Store


def roar_row(model, method, k, value, saturated=False):
    return {"model": model, "method": method, "fraction": k, "repeat": 0, "diffroar": value,
            "top_accuracy": 0.5 + value, "bottom_accuracy": 0.5, "saturated": saturated}


def test_saturated_cells_are_left_out_of_the_verdict():
    rows = [roar_row(f"{kind}/{s}", "Saliency", 0.05, value) for s, (kind, value) in
            enumerate([("standard", 0.10), ("standard", 0.12), ("standard", 0.11), ("robust", 0.30), ("robust", 0.31),
                       ("robust", 0.29)])]
    rows += [roar_row(f"{kind}/{s}", "Saliency", 0.1, -0.9, saturated=True) for kind in ("standard", "robust")
             for s in range(3)]
    found = {c.key: c for c in claims({"diffroar": rows})}
    claim = found["diffroar:Saliency:robust-vs-standard"]
    assert claim.word == "above" and claim.interval.mean == pytest.approx(0.19)   # the -0.9 cells are ignored
    everything_saturated = [dict(r, saturated=True) for r in rows]
    found = {c.key: c for c in claims({"diffroar": everything_saturated})}
    assert found["diffroar:Saliency:robust-vs-standard"].word == "saturated"


def check_words(found):
    for claim in found:
        low, high = claim.interval.low, claim.interval.high
        if claim.word in ("above", "positive"):
            assert low > 0, claim.sentence
        elif claim.word.startswith(("below", "negative")):
            assert high < 0, claim.sentence
        elif claim.word.startswith("not distinguishable"):
            assert low <= 0 <= high, claim.sentence
            assert f"n = {claim.interval.n}" in claim.word
        else:
            assert claim.word == "saturated", claim.sentence
        assert claim.word in claim.sentence


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_preset_verdicts_follow_their_stored_rows(tmp_path, seed):
    run(COMMANDS["audit"].preset("tiny", seed=seed, methods=("saliency", "random")), tmp_path)
    store = Store(tmp_path / "results.sqlite")
    results = {audit: store.rows(audit) for audit in store.audits()}
    found = {c.key: c for c in claims(results)}
    check_words(found.values())
    mass = {}                                    # recompute one claim from the stored rows, by hand
    for row in results["signal_mass"]:
        if row["method"] == "Saliency":
            mass.setdefault(row["model"].split("/")[0], []).append(row["signal_mass"])
    welch = stats.ttest_ind(mass["robust"], mass["standard"], equal_var=False).confidence_interval(0.95)
    claim = found["signal_mass:Saliency:robust-vs-standard"]
    assert (claim.interval.low, claim.interval.high) == pytest.approx((welch.low, welch.high))
    assert {"signal_mass:Saliency:standard-top-vs-random", "diffroar:Saliency:robust-vs-standard"} <= set(found)
    if seed == 0:                  # same command, seed, machine and threads: identical numbers
        run(COMMANDS["audit"].preset("tiny", seed=seed, methods=("saliency", "random")), tmp_path / "again")
        again = Store(tmp_path / "again" / "results.sqlite")
        for audit in set(results) - {"settings"}:
            assert again.rows(audit) == results[audit], audit


def test_evaluation_claims_read_only_the_metrics_the_audit_lets_be_read():
    from gradaudit.report.reading import evaluation_claims

    each = {"A": [0.9, 0.8, 0.85, 0.95], "B": [0.5, 0.4, 0.45, 0.55], "Random": [0.1, 0.2, 0.1, 0.2]}
    rows = [{"model": "net", "method": m, "score_each": v} for m, v in each.items()]

    def audited(trust, reliability):
        return {"model": "net", "metric": "score", "audit": "custom", "column": "score", "direction": "higher",
                "ranking": ["A", "B", "Random"], "controls": ["Random"], "trust": trust, "reliability": reliability}

    def sentences(trust, reliability):
        return [c.sentence for c in evaluation_claims({"custom": rows, "metric_audit": [audited(trust, reliability)]})]

    assert "(trusted here; higher is better): A ranks first" in sentences("trusted", "reliable")[0]
    assert "(tentative here: its α reaches 0.667, not 0.8;" in sentences("tentative", "tentative")[0]
    assert "reported, not judged against the controls; rankings reliable" in sentences("reported", "reliable")[0]
    assert sentences("reported", "not reliable") == sentences("weak", "not reliable") == []
    assert sentences("flagged", "reliable") == []
