"""SmoothGrad (Smilkov et al. 2017) and its square / variance variants, around any method."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import sample_sum, select_rows
from ..engine.checks import check_choice, check_nonnegative, check_positive_int
from ..engine.noise import GaussianNoise, noise_scale, noisy
from .base import Method, fix_target
from .gradient import Saliency

KINDS = ("mean", "square", "var")


def check_noise(noise, sigma, samples) -> None:
    """Shared checks of the noise settings of SmoothGrad-like methods."""
    check_positive_int("samples", samples)
    check_nonnegative("noise", noise)
    if sigma is not None:
        check_nonnegative("sigma", sigma)


@dataclass(frozen=True)
class SmoothGrad(Method):
    """Average ``method`` over noisy copies x + eps, eps ~ N(0, sigma^2).

    method: any gradaudit method (default ``Saliency()``), run on each noisy copy.
    samples: noisy copies per example.
    noise: sigma as a fraction of each example's range, sigma = noise * (max(x) - min(x)), as
        in the paper (0.10-0.20). sigma: an absolute standard deviation instead (as Captum's
        ``NoiseTunnel(stdevs=...)``); it wins when given.
    kind: "mean" (SmoothGrad), "square" (mean of squares, SmoothGrad^2) or "var" (VarGrad).
    seed: the noise is a function of (seed, example, sample) only, so the result does not
        depend on ``batch_size`` or device.
    """

    method: Method = None
    samples: int = 50
    noise: float = 0.15
    kind: str = "mean"
    sigma: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.method is None:
            object.__setattr__(self, "method", Saliency())
        if not isinstance(self.method, Method):
            raise TypeError(f"method must be a gradaudit method, got {type(self.method).__name__}")
        check_noise(self.noise, self.sigma, self.samples)
        check_choice("kind", self.kind, KINDS)

    @property
    def evaluations(self) -> int:
        return self.samples * self.method.evaluations

    @property
    def linear_model(self):
        return self.method.linear_model if self.kind == "mean" else None

    def _explain(self, model, x, target, chunk):
        target = fix_target(model, x, target, chunk)
        scale = noise_scale(x, self.noise, self.sigma)
        draws = GaussianNoise(self.seed, len(x), x.shape[1:], x.dtype)
        inner = self.method

        def rows(r, e, k):
            attr = inner._explain(select_rows(model, e), noisy(x, e, k, scale, draws), target.select(e), chunk)
            return (attr, attr * attr) if self.kind == "var" else (attr * attr if self.kind == "square" else attr,)

        sums = sample_sum(len(x), self.samples, max(1, chunk // inner.evaluations), rows, x.device)
        mean = sums[0] / self.samples
        if self.kind == "var":
            mean = sums[1] / self.samples - mean * mean
        return mean.to(x.dtype)
