"""95% intervals for means and differences of means, and the words that follow them.

Every mean an audit reports comes with a Student-t interval over its unit (images, retraining
seeds, audited-model seeds); a comparison of two groups uses Welch's interval of the
difference. The verdict is "above" / "below" only when the interval excludes 0; otherwise
"not distinguishable", with a rough count of units that would resolve the observed
difference (the n at which the interval's half-width would shrink to the difference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats as scipy_stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean (or difference of means) with its ``level`` interval [low, high] over ``n`` units."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def text(self, digits: int = 3, signed: bool = False) -> str:
        """``0.123 [0.101, 0.145]`` (signed: ``+0.123 [+0.101, +0.145]``)."""
        form = f"{{:{'+' if signed else ''}.{digits}f}}"
        if not math.isfinite(self.low):
            return f"{form.format(self.mean)} [n = {self.n}: no interval]"
        return f"{form.format(self.mean)} [{form.format(self.low)}, {form.format(self.high)}]"

    def as_row(self, prefix: str) -> dict:
        """Columns ``prefix``, ``prefix_low``, ``prefix_high``, ``prefix_n`` for a store row."""
        return {prefix: self.mean, f"{prefix}_low": self.low, f"{prefix}_high": self.high, f"{prefix}_n": self.n}


def _values(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).flatten()


def mean_interval(values, level: float = LEVEL) -> Interval:
    """Mean of ``values`` with its Student-t interval (infinite for fewer than 2 values)."""
    v = _values(values)
    n = len(v)
    if n == 0:
        raise ValueError("values must hold at least one number")
    mean = v.mean().item()
    if n < 2:
        return Interval(mean, -math.inf, math.inf, n, level)
    half = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * v.std().item() / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def difference_interval(a, b, level: float = LEVEL) -> Interval:
    """mean(a) - mean(b) with Welch's interval; ``n`` is the smaller group's size."""
    a, b = _values(a), _values(b)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both groups must hold at least one number")
    diff = a.mean().item() - b.mean().item()
    n = min(len(a), len(b))
    if len(a) < 2 or len(b) < 2:
        return Interval(diff, -math.inf, math.inf, n, level)
    va, vb = a.var().item() / len(a), b.var().item() / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, n, level)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * se
    return Interval(diff, diff - half, diff + half, n, level)


def units_needed(interval: Interval) -> int | None:
    """Units per group at which the interval's half-width would equal the observed difference
    (standard errors shrink as 1/sqrt(n)); None when the difference is 0 or has no interval."""
    if interval.mean == 0 or not math.isfinite(interval.half_width):
        return None
    return max(interval.n + 1, math.ceil(interval.n * (interval.half_width / abs(interval.mean)) ** 2))


def verdict(interval: Interval) -> str:
    """"above" / "below" when the interval excludes 0, otherwise "not distinguishable with
    n = ... (about ... would be needed)"."""
    if interval.low > 0:
        return "above"
    if interval.high < 0:
        return "below"
    needed = units_needed(interval)
    more = f" (about {needed} would be needed to resolve a difference of {interval.mean:+.3f})" if needed else ""
    return f"not distinguishable with n = {interval.n}{more}"


def bca_interval(estimate: float, resampled, jackknife, level: float = LEVEL) -> tuple[float, float]:
    """The bias-corrected and accelerated (BCa) bootstrap interval (Efron 1987; Efron & Tibshirani 1993, ch. 14)
    of a statistic whose value on the data is ``estimate``, on bootstrap resamples ``resampled`` [B] and on
    the leave-one-unit-out samples ``jackknife`` [n] (NaNs left out of both; NaN, NaN if no resample is finite).

    The percentile interval assumes the resamples sit around the estimate; a statistic bounded above, such as
    Krippendorff's alpha near 1, has resamples piled on one side (a duplicated unit agrees with itself), and
    the percentile interval can miss the estimate. BCa moves the percentiles by the bias z0 = Phi^-1(share of
    resamples below the estimate, ties counted half) and the acceleration a (the jackknife's skewness), as
    scipy's ``bootstrap(method="BCa")``; a = 0 where the jackknife is constant."""
    resampled, jackknife = _values(resampled), _values(jackknife)
    resampled, jackknife = resampled[~resampled.isnan()], jackknife[~jackknife.isnan()]
    if len(resampled) == 0 or not math.isfinite(estimate):
        return math.nan, math.nan
    below = ((resampled < estimate).sum() + (resampled == estimate).sum() / 2).item() / len(resampled)
    z0 = scipy_stats.norm.ppf(min(max(below, 0.5 / len(resampled)), 1 - 0.5 / len(resampled)))
    spread = jackknife.mean() - jackknife
    scale = (spread ** 2).sum().item() ** 1.5
    acceleration = (spread ** 3).sum().item() / (6 * scale) if scale > 0 else 0.0
    shares = []
    for z in scipy_stats.norm.ppf([(1 - level) / 2, (1 + level) / 2]):
        shifted = z0 + (z0 + z) / (1 - acceleration * (z0 + z))
        shares.append(scipy_stats.norm.cdf(shifted))
    low, high = torch.quantile(resampled, torch.tensor(shares, dtype=resampled.dtype))
    return low.item(), high.item()
