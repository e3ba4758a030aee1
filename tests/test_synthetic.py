"""The paper's synthetic test bed: exact data, and the sign pattern of attribution quality."""

import pytest
import torch

from gradaudit import audit, data, models, train


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
    linear = torch.nn.Linear(10, 2).double()
    with torch.no_grad():                  # logit margin = 2 * x . (1, ..., 1): gradient equal on every coordinate
        linear.weight.copy_(torch.stack([-torch.ones(10), torch.ones(10)]))
        linear.bias.zero_()
    row = audit.signal_coordinate(None, linear, type("D", (), {"x": test.x.double(), "y": test.y,
                                                            "signal": test.signal})()).rows[0]
    assert row["p_top"] == row["p_bottom"] == pytest.approx((test.signal == 0).float().mean().item())  # all tied
    assert row["quality"] == 0 and row["abs_cos"] == pytest.approx(10 ** -0.5)


@pytest.mark.slow
def test_standard_net_inverts_and_robust_net_aligns():
    """A smaller, faster version of ``gradaudit audit --preset synthetic`` (same recipe, narrower net)."""
    train_set, test_set = data.signal_coordinates(10_000, seed=0), data.signal_coordinates(500, seed=1)
    recipe = train.Recipe(optimizer="sgd", lr=0.1, batch_size=250, schedule="step", gamma=0.75, every=50, floor=0.01)
    attack = train.PGD(norm="linf", eps=0.45, steps=8, step_size=0.25 * 0.45, lower=-1.0, upper=1.0)
    rows = {}
    for kind, epochs, adversary in (("standard", 10, None), ("robust", 45, attack)):
        torch.manual_seed(0)
        net = train.fit(models.mlp((10,), 2, hidden=1000), train_set, train.Recipe.of(recipe, epochs=epochs),
                        adversary=adversary, progress=False)
        rows[kind] = audit.signal_coordinate(None, net, test_set).rows[0]
    assert rows["standard"]["quality_high"] < 0                          # feature inversion
    assert rows["robust"]["quality_low"] > 0.5 and rows["robust"]["abs_cos"] > rows["standard"]["abs_cos"]
