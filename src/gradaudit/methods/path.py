"""Path methods: Integrated Gradients (Sundararajan et al. 2017) with Captum's quadrature rules,
and GradientSHAP (IG with random baselines and path points)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..engine import backprop, sample_sum
from ..engine.checks import check_choice, check_nonnegative, check_positive_int
from ..engine.noise import GaussianNoise, noise_scale, noisy, uniform
from ..engine.packing import check_reference_set, references
from .base import BaselineGap, Method, broadcast_baseline, fix_target

RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] and weights (summing to 1) for integrating over the path."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    if rule == "riemann_trapezoid":
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (np.arange(steps) + offset) / steps, np.full(steps, 1.0 / steps)


@dataclass(frozen=True)
class IntegratedGradients(BaselineGap, Method):
    """(x - x') * integral over alpha of ds/dx at x' + alpha (x - x'), by quadrature.

    steps: quadrature points (model evaluations per example).
    baseline: x', a scalar, a tensor broadcastable to the inputs ([B, ...] or [...]), or a
        callable ``inputs -> baseline``. Default 0.
    rule: "gausslegendre" (default, as Captum) or "riemann_left/right/middle/trapezoid".
    Completeness: attributions sum to s(x) - s(x') up to the quadrature error; ``with_delta``
    returns that gap per example.
    """

    steps: int = 50
    baseline: float | Tensor | Callable = 0.0
    rule: str = "gausslegendre"

    def __post_init__(self):
        check_positive_int("steps", self.steps, 2 if self.rule == "riemann_trapezoid" else 1)
        check_choice("rule", self.rule, RULES)

    @property
    def evaluations(self) -> int:
        return self.steps

    @property
    def linear_model(self):
        return "contribution"

    def _baseline(self, x: Tensor) -> Tensor:
        return broadcast_baseline(self.baseline, x)

    def _explain(self, model, x, target, chunk):
        target = fix_target(model, x, target, chunk)
        x0 = self._baseline(x)
        nodes = quadrature(self.rule, self.steps)
        alphas, weights = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in nodes)
        shape = (-1,) + (1,) * (x.ndim - 1)

        def rows(r, e, k):
            start, delta = x0[e], x[e] - x0[e]
            grad = backprop(model, start + alphas[k].view(shape) * delta, target, e).input_grad
            return (grad * weights[k].view(shape),)

        return ((x - x0) * sample_sum(len(x), self.steps, chunk, rows, x.device)[0]).to(x.dtype)


@dataclass(frozen=True)
class GradientShap(Method):
    """GradientSHAP / expected gradients (Lundberg & Lee 2017; Erion et al. 2021): the mean over
    ``samples`` draws of (x~ - b) * ds/dx at b + alpha (x~ - b), with b drawn uniformly from the
    rows of ``baselines`` [M, ...], alpha ~ U(0, 1) and x~ = x + N(0, sigma^2) (as Captum's
    ``GradientShap``; ``sigma`` 0, the default, is no input noise). Its expectation is IG averaged
    over the baselines; on a linear model every draw gives w * (x - b).

    seed: the draws are a function of (seed, example, sample) only, so any ``batch_size`` and any
        device give the same result.
    """

    baselines: Tensor = None
    samples: int = 5
    sigma: float = 0.0
    seed: int = 0

    def __post_init__(self):
        check_reference_set("baselines", self.baselines)
        check_positive_int("samples", self.samples)
        check_nonnegative("sigma", self.sigma)

    @property
    def evaluations(self) -> int:
        return self.samples

    @property
    def linear_model(self):
        return "contribution"

    def _explain(self, model, x, target, chunk):
        baselines = references(self.baselines, x, "baselines")
        target = fix_target(model, x, target, chunk)
        scale = noise_scale(x, None, self.sigma)
        draws = GaussianNoise(self.seed, len(x), x.shape[1:], x.dtype)
        shape = (-1,) + (1,) * (x.ndim - 1)

        def rows(r, e, k):
            u = uniform(self.seed, 1, e * self.samples + k, (2,), torch.float64).to(x.device)
            chosen = baselines[(u[:, 0] * len(baselines)).long().clamp(max=len(baselines) - 1)]
            start = noisy(x, e, k, scale, draws) if self.sigma else x[e]
            delta = start - chosen
            point = chosen + u[:, 1].to(x.dtype).view(shape) * delta
            return (delta * backprop(model, point, target, e).input_grad,)

        return (sample_sum(len(x), self.samples, chunk, rows, x.device)[0] / self.samples).to(x.dtype)
