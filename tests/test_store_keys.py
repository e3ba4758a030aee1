"""A stored row answers for everything that made it: every argument, the data by content, the model by its
weights, the method by its configuration. Nothing is served for another call; old stores are refused;
non-finite rows are never stored."""

import sqlite3
from types import SimpleNamespace

import pytest
import torch
from nets import small_cnn

import gradaudit as ga
from gradaudit import audit
from gradaudit.audit.common import explain_rows, memo
from gradaudit.keys import fingerprint, key, tensor_digest
from gradaudit.maps import heatmap
from gradaudit.store import Store


def _data(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=generator)
    y = torch.arange(n) % 3
    masks = torch.zeros(n, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    return SimpleNamespace(x=x, y=y, signal_mask=masks[:, None])


METHOD = ga.Saliency()
AUDITS = {
    "insertion_deletion": lambda net, d, **k: audit.insertion_deletion(METHOD, net, d, **k),
    "pointing_game": lambda net, d, **k: audit.pointing_game(METHOD, net, d, **k),
    "relevance_mass": lambda net, d, **k: audit.relevance_mass(METHOD, net, d, **k),
    "relevance_rank": lambda net, d, **k: audit.relevance_rank(METHOD, net, d, **k),
    "infidelity": lambda net, d, **k: audit.infidelity(METHOD, net, d, samples=4, **k),
    "faithfulness_correlation": lambda net, d, **k: audit.faithfulness_correlation(METHOD, net, d, samples=4, **k),
    "monotonicity": lambda net, d, **k: audit.monotonicity(METHOD, net, d, **k),
    "sensitivity_max": lambda net, d, **k: audit.sensitivity_max(METHOD, net, d, samples=2, **k),
    "signal_mass": lambda net, d, **k: audit.signal_mass(METHOD, net, d, **k),
    "class_sensitivity": lambda net, d, **k: audit.class_sensitivity(METHOD, net, d, **k),
    "road": lambda net, d, **k: audit.road(METHOD, net, d, fractions=(0.5,), **k),
    "randomization": lambda net, d, **k: audit.randomization(METHOD, net, d, **k),
}


def _per_image(row):
    """How many images a row was computed over, whatever the audit calls the count."""
    for column in ("images", "examples"):
        if column in row:
            return row[column]
    return next(len(v) for k, v in row.items() if k.endswith("_each"))


@pytest.mark.parametrize("name", sorted(AUDITS))
def test_a_row_is_never_served_for_another_limit_model_or_data(name, tmp_path):
    """The issue's case for every metric: limit=2 then limit=4 into one store gives the 4-image row; a model of
    other weights under the same name, or other pixels of the same shape, get rows of their own."""
    run, store = AUDITS[name], Store(tmp_path / "results.sqlite")
    net, data = small_cnn(), _data()
    first = run(net, data, limit=2, store=store).rows[0]
    assert _per_image(first) == 2
    wider = run(net, data, limit=4, store=store).rows[0]
    assert _per_image(wider) == 4
    again = run(net, data, limit=4, store=store).rows[0]
    assert again == wider
    stored = len(store.rows(name))
    other = small_cnn()
    with torch.no_grad():
        other[0].weight.add_(0.5)
    run(other, data, limit=4, store=store)
    assert len(store.rows(name)) > stored, "another model under the name 'model' was served the first one's row"
    stored = len(store.rows(name))
    run(net, _data(seed=1), limit=4, store=store)
    assert len(store.rows(name)) > stored, "other data was served the first data's row"
    store.close()


def test_the_issue_case_insertion_deletion_limit_5_then_20(tmp_path):
    store = Store(tmp_path / "results.sqlite")
    net, data = small_cnn(), _data(n=20)
    assert len(audit.insertion_deletion(METHOD, net, data, limit=5, store=store).rows[0]["insertion_each"]) == 5
    assert len(audit.insertion_deletion(METHOD, net, data, limit=20, store=store).rows[0]["insertion_each"]) == 20
    store.close()


def test_methods_are_keyed_by_their_full_configuration(tmp_path):
    store = Store(tmp_path / "results.sqlite")
    net, data = small_cnn(), _data()
    noisy = audit.relevance_mass({"m": ga.SmoothGrad(ga.Saliency(), samples=4, noise=0.1)}, net, data, store=store)
    louder = audit.relevance_mass({"m": ga.SmoothGrad(ga.Saliency(), samples=4, noise=0.5)}, net, data, store=store)
    assert noisy.rows[0]["relevance_mass"] != louder.rows[0]["relevance_mass"]
    assert len(store.rows("relevance_mass")) == 2
    store.close()


def test_a_served_row_is_not_recomputed(tmp_path):
    store, calls = Store(tmp_path / "results.sqlite"), []
    label, arguments = {"model": "m"}, {"x": torch.arange(3.0)}
    first = memo(store, "toy", label, arguments, lambda: calls.append(1) or {"value": 1.0})
    second = memo(store, "toy", label, {"x": torch.arange(3.0)}, lambda: calls.append(1) or {"value": 2.0})
    assert first == second == {"model": "m", "value": 1.0} and calls == [1]
    store.close()


def test_a_non_finite_row_is_neither_stored_nor_returned(tmp_path):
    store = Store(tmp_path / "results.sqlite")
    net, data = small_cnn(), _data()
    maps = torch.rand(6, 8, 8)
    maps[3, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"bad gave a non-finite attribution for image 3 \(1 of 6 images\)"):
        audit.relevance_mass({"bad": maps}, net, data, store=store)
    assert store.rows("relevance_mass") == []
    store.close()


def test_a_non_finite_score_is_neither_stored_nor_returned(tmp_path):
    store = Store(tmp_path / "results.sqlite")
    with pytest.raises(ValueError, match=r"toy for model m, method g gave a non-finite number \(value_each\[1\] = "
                                         r"nan\); it is not stored"):
        memo(store, "toy", {"model": "m", "method": "g"}, {}, lambda: {"value_each": [0.5, float("nan")]})
    row = memo(store, "toy", {"model": "m", "method": "one image"}, {},
               lambda: {"value": 0.5, "value_low": float("-inf"), "value_high": float("inf")})
    assert row["value_high"] == float("inf") and len(store.rows("toy")) == 1   # an interval of n = 1 is no error
    store.close()


def test_a_store_from_an_earlier_key_scheme_is_refused(tmp_path):
    path = tmp_path / "results.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE results (audit TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL, "
                "PRIMARY KEY (audit, key))")
    old.execute("INSERT INTO results VALUES ('road', '{\"model\":\"model\"}', '{}')")
    old.commit()
    old.close()
    with pytest.raises(ValueError, match="written by another version of gradaudit .key scheme 0"):
        Store(path)
    fresh = Store(tmp_path / "new.sqlite")
    fresh.close()
    Store(tmp_path / "new.sqlite").close()                    # the current scheme reopens


def test_fingerprints_follow_content():
    t = torch.zeros(4)
    before = tensor_digest(t)
    assert tensor_digest(torch.zeros(4)) == before
    t[1] = 1                                                  # in place: the cached digest must not be served
    assert tensor_digest(t) != before
    assert tensor_digest(torch.zeros(4, dtype=torch.float64)) != before
    assert tensor_digest(torch.zeros(2, 2)) != before
    net = small_cnn()
    described = fingerprint(net)
    net[0].weight.data[0, 0, 0, 0] += 1                        # .data bypasses the version counter
    assert fingerprint(net) != described
    net.eval()
    assert fingerprint(small_cnn()) == described


def test_callables_are_keyed_by_name_code_and_closure():
    def make(scale):
        return lambda x: x * scale

    assert fingerprint(make(2)) == fingerprint(make(2))
    assert fingerprint(make(2)) != fingerprint(make(3))

    def f(x):
        return x + 1

    def g(x):
        return x + 2

    g.__qualname__ = f.__qualname__                           # the same name, other code
    assert fingerprint(g)["callable"] == fingerprint(f)["callable"]
    assert fingerprint(g) != fingerprint(f)


def test_an_undescribable_argument_is_named():
    with pytest.raises(TypeError, match=r"cannot key arguments\['thing'\]: a generator"):
        key("toy", {"thing": (i for i in range(3))})



class _NaNWhereMarked(ga.Method):
    """Ones everywhere, NaN for the examples whose first pixel is 7 (the marked ones)."""

    needs_gradients = False

    def _explain(self, model, x, target, chunk):
        attribution = torch.ones_like(x)
        attribution[x[:, 0, 0, 0] == 7] = float("nan")
        return attribution


def test_a_method_s_non_finite_attribution_names_the_dataset_row(tmp_path):
    data = _data(n=6)
    data.x[5, 0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"bad gave a non-finite attribution for image 5 of 6"):
        explain_rows(_NaNWhereMarked(), small_cnn(), data.x, None, heatmap, "bad", batch=2)
    store = Store(tmp_path / "results.sqlite")
    with pytest.raises(ValueError, match=r"bad gave a non-finite attribution for image 5 of 6"):
        audit.relevance_mass({"bad": _NaNWhereMarked()}, small_cnn(), data, store=store)
    assert store.rows("relevance_mass") == []
    store.close()
