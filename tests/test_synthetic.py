"""The paper's synthetic test bed: exact data, and the sign pattern of attribution quality."""

import pytest
import torch

from gradaudit import audit, data
from gradaudit.jobs.audit import run
from gradaudit.jobs.presets import COMMANDS, PRESETS
from gradaudit.report.reading import claims
from gradaudit.store import Store


def test_signal_coordinates_are_exact():
    d = data.signal_coordinates(4000, d=10, seed=3)
    assert d.x.shape == (4000, 10) and set(d.y.unique().tolist()) == {0, 1}
    assert torch.equal(d.x.abs().sum(1), torch.ones(4000))                     # one nonzero coordinate
    assert torch.equal(d.x[torch.arange(4000), d.signal], (2 * d.y - 1).float())   # x = y e_j, y = +-1
    share = torch.bincount(d.signal, minlength=10).float() / 4000
    assert (share - 0.1).abs().max() < 0.02                                    # bias 1/d: uniform
    biased = data.signal_coordinates(4000, d=10, bias=0.5, seed=3)
    assert (biased.signal == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.equal(data.signal_coordinates(50, seed=1).x, data.signal_coordinates(50, seed=1).x)
    with pytest.raises(ValueError, match="bias must be a probability"):
        data.signal_coordinates(10, bias=1.5)


def test_signal_coordinate_audit_on_known_attributions():
    test = data.signal_coordinates(200, seed=1)
    linear = torch.nn.Linear(10, 2).double().eval()
    with torch.no_grad():                  # logit margin = 2 * x . (1, ..., 1): gradient equal on every coordinate
        linear.weight.copy_(torch.stack([-torch.ones(10), torch.ones(10)]))
        linear.bias.zero_()
    row = audit.signal_coordinate(None, linear, type("D", (), {"x": test.x.double(), "y": test.y,
                                                            "signal": test.signal})()).rows[0]
    assert row["p_top"] == row["p_bottom"] == pytest.approx((test.signal == 0).float().mean().item())  # all tied
    assert row["quality"] == 0 and row["abs_cos"] == pytest.approx(10 ** -0.5)


@pytest.mark.slow
def test_synthetic_preset_reproduces_the_sign_pattern(tmp_path):
    """``gradaudit audit --preset synthetic`` with fewer epochs (same recipe otherwise): the standard
    net inverts (quality < 0), the robust one ranks the signal first and aligns with x."""
    recipe = PRESETS["synthetic"].standard_recipe
    settings = COMMANDS["audit"].preset("synthetic", standard_recipe={**recipe, "epochs": 10},
                                        robust_recipe={**recipe, "epochs": 40})
    run(settings, tmp_path)
    store = Store(tmp_path / "results.sqlite")
    rows = {r["model"]: r for r in store.rows("signal_coordinate")}
    assert rows["standard"]["quality_high"] < 0                          # feature inversion
    assert rows["robust"]["quality_low"] > 0.5 and rows["robust"]["abs_cos"] > rows["standard"]["abs_cos"] + 0.2
    words = {c.key: c.word for c in claims({"signal_coordinate": store.rows("signal_coordinate")})}
    assert words == {"signal_coordinate:standard": "negative (feature inversion)",
                     "signal_coordinate:robust": "positive"}
    assert "feature inversion" in (tmp_path / "report.html").read_text()
