"""The engine's row-conditioned models (each example its own forward, as text models need),
checked on a linear model whose weights differ per example: every method must use the weights
of the example each row came from, whatever the chunking."""

import pytest
import torch

import gradaudit as ga
from gradaudit.engine import RowConditioned


class PerExampleLinear(RowConditioned):
    """f_e(x) = <w_e, x> for example e: output [R, 1]."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.nn.Parameter(weights)

    def forward(self, x, rows):
        return (x.flatten(1) * self.weights[rows].flatten(1)).sum(1, keepdim=True)


@pytest.fixture
def case():
    torch.manual_seed(0)
    weights = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    return PerExampleLinear(weights).eval(), torch.rand(5, 1, 4, 4, dtype=torch.float64), weights


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_each_row_uses_its_own_example(case, batch_size):
    model, x, w = case
    run = dict(batch_size=batch_size)
    assert torch.allclose(ga.Saliency(abs=False)(model, x, 0, **run), w)
    assert torch.allclose(ga.IntegratedGradients(steps=7)(model, x, 0, **run), x * w)
    assert torch.allclose(ga.SmoothGrad(ga.Saliency(abs=False), samples=4, sigma=0.5)(model, x, 0, **run), w)
    noisy_ig = ga.SmoothGrad(ga.IntegratedGradients(steps=3), samples=2, sigma=0.5)   # = mean noisy x, times w_e
    ones = PerExampleLinear(torch.ones_like(w)).eval()
    assert torch.allclose(noisy_ig(model, x, 0, **run), noisy_ig(ones, x, 0, **run) * w)
    assert torch.allclose(ga.Occlusion(window=1, stride=1)(model, x, 0, **run), x * w)
    attr, gap = ga.IntegratedGradients(steps=5).with_delta(model, x, 0, **run)
    assert gap.abs().max() < 1e-12
