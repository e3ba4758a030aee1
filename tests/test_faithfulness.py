"""Local faithfulness reproduces "Which Explanation Should I Choose?": each method fits its own
neighbourhood best (or tied best) and no method is best everywhere."""

import pytest
import torch
from torch import nn

import gradaudit as ga
from gradaudit import audit
from gradaudit.store import Store


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Softplus(), nn.Linear(12, 12), nn.Tanh(),
                          nn.Linear(12, 3)).double().eval()
    with torch.no_grad():                       # curved enough that the neighbourhoods disagree
        model[1].weight.mul_(3.0)
        model[3].weight.mul_(2.0)
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64) + 0.5
    return model, x


OWN = {
    "gradient": (ga.Saliency(abs=False), "gaussian:0.01"),
    "smoothgrad": (ga.SmoothGrad(ga.Saliency(abs=False), samples=400, sigma=0.5), "gaussian:0.5"),
    "clime": (ga.CLIME(samples=800, sigma=0.5, penalty=0.0), "gaussian:0.5"),
    "lime": (ga.LIME(samples=1500, kernel_width=1e6, penalty=1e-6), "mask:0.5"),
    "kernelshap": (ga.KernelSHAP(samples=1500), "shap"),
    "ig": (ga.IntegratedGradients(steps=64), "uniform"),
    "occlusion": (ga.Occlusion(window=1, stride=1), "occlusion"),
}


@pytest.mark.slow
def test_each_method_fits_its_own_neighbourhood_and_none_fits_all(setting, tmp_path):
    model, x = setting
    hoods = sorted({hood for _, hood in OWN.values()})
    result = audit.local_faithfulness({name: m for name, (m, _) in OWN.items()}, model, x, neighbourhoods=hoods,
                                      samples=600, store=Store(tmp_path / "r.sqlite"))
    table = result.table().pivot(index="method", columns="neighbourhood", values="unexplained")
    for name, (_, hood) in OWN.items():
        best = table[hood].min()
        assert table.loc[name, hood] <= best + 0.02 + 0.1 * best, (name, hood, table[hood].to_dict())
    assert table.loc["occlusion", "occlusion"] < 1e-9       # exact on single removals
    winners = {hood: set(table.index[table[hood] <= table[hood].min() + 0.02 + 0.1 * table[hood].min()])
               for hood in hoods}
    assert not set.intersection(*winners.values()), winners   # no free lunch
    assert result.table()["best"].sum() >= len(hoods)


def test_neighbourhoods_and_errors(setting):
    model, x = setting
    with pytest.raises(ValueError, match="neighbourhood must be gaussian:SIGMA"):
        audit.Neighbourhood("gaussian")
    with pytest.raises(ValueError, match="not a local linear model"):
        audit.local_faithfulness([ga.Saliency()], model, x, neighbourhoods=["gaussian:0.1"])
    from gradaudit.engine.noise import GaussianNoise

    draws = GaussianNoise(0, len(x), x.shape[1:], x.dtype)
    e, k = torch.arange(6), torch.full((6,), 3)
    occluded = audit.Neighbourhood("occlusion").sample(x, e, k, draws)
    assert ((occluded == 0).flatten(1).sum(1) == 1).all()
    masked = audit.Neighbourhood("mask:0.5").sample(x, e.repeat(50), torch.arange(300) // 6, draws)
    assert 0.4 < (masked != 0).double().mean() < 0.6


def test_a_method_is_recommended_only_where_its_paired_lead_excludes_zero():
    from gradaudit.audit import recommendation

    def row(method, values):
        return {"neighbourhood": "h", "method": method, "unexplained": sum(values) / len(values),
                "unexplained_each": values}

    clear = [row("A", [0.10, 0.20, 0.30, 0.40]), row("B", [0.20, 0.31, 0.39, 0.50]), row("C", [0.9] * 4)]
    verdict = recommendation(clear, "h")
    assert verdict.recommended == "A" and verdict.ranking == ("A", "B", "C")
    assert verdict.margin.mean == pytest.approx(0.1) and verdict.margin.low > 0   # paired: B - A = 0.1 +- 0.01
    # The same means, unpaired noise: B's lead over A flips sign between examples, so A and B are tied; C is not.
    noisy = [row("A", [0.10, 0.20, 0.30, 0.40]), row("B", [0.40, 0.00, 0.50, 0.22]), row("C", [0.9] * 4)]
    verdict = recommendation(noisy, "h")
    assert verdict.recommended is None and verdict.tied == ("A", "B") and verdict.margin.low < 0 < verdict.margin.high
