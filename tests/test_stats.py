"""Intervals against scipy and against their promised coverage; verdict words follow intervals."""

import math

import pytest
import torch
from scipy import stats

from gradaudit.audit.stats import Interval, difference_interval, mean_interval, units_needed, verdict


def test_mean_interval_equals_scipy_t_interval():
    values = torch.tensor([0.3, 0.5, 0.2, 0.9, 0.4, 0.6])
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean().item(), scale=stats.sem(values.numpy()))
    got = mean_interval(values)
    assert got.mean == pytest.approx(values.mean().item()) and got.n == 6
    assert got.low == pytest.approx(low) and got.high == pytest.approx(high)


def test_mean_interval_covers_the_true_mean_95_percent_of_the_time():
    generator = torch.Generator().manual_seed(0)
    draws = torch.randn(4000, 8, generator=generator, dtype=torch.float64) * 2 + 1   # N(1, 4), n = 8
    covered = sum(mean_interval(row).low <= 1 <= mean_interval(row).high for row in draws)
    assert covered / 4000 == pytest.approx(0.95, abs=0.012)   # binomial sd 0.0034: 3.5 sd


def test_difference_interval_equals_welch():
    a = torch.tensor([0.61, 0.66, 0.70, 0.64])
    b = torch.tensor([0.50, 0.55, 0.52])
    welch = stats.ttest_ind(a.numpy(), b.numpy(), equal_var=False).confidence_interval(0.95)
    got = difference_interval(a, b)
    assert got.low == pytest.approx(welch.low) and got.high == pytest.approx(welch.high)
    assert got.mean == pytest.approx(a.mean().item() - b.mean().item()) and got.n == 3


def test_verdict_words_follow_the_interval():
    assert verdict(Interval(0.2, 0.1, 0.3, 5)) == "above"
    assert verdict(Interval(-0.2, -0.3, -0.1, 5)) == "below"
    word = verdict(Interval(0.05, -0.05, 0.15, 4))
    assert word.startswith("not distinguishable with n = 4") and "about 16 would be needed" in word
    assert units_needed(Interval(0.05, -0.05, 0.15, 4)) == 16       # half-width 0.1 -> 0.05: 4 x (0.1/0.05)^2
    single = mean_interval([0.4])
    assert math.isinf(single.low) and verdict(single) == "not distinguishable with n = 1"
    assert single.text() == "0.400 [n = 1: no interval]"
