"""The synthetic test bed of Shah, Jain & Netrapalli (2021): one signal coordinate per example.

Each example is x = y * e_j in R^d with label y = +-1 (probability 1/2 each) and a signal
coordinate j: coordinate 0 with probability ``bias``, otherwise one of the other d - 1
uniformly (the authors' ``SemiRandomSignalCoordinate(d=10, num_signal=1, bias_prob=1/d)`` in
their notebook ``02_fig_in_synthetic_data.ipynb``). Only coordinate j carries information about
the label, so the ground truth of every attribution is known exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


class SignalCoordinates(Dataset):
    """Items ``(x [d] float32, y long in {0, 1}, signal long)``; tensors in ``.x``, ``.y``,
    ``.signal``. Class 1 is y = +1 and class 0 is y = -1, so ``x = (2y - 1) * e_signal``."""

    def __init__(self, x: Tensor, y: Tensor, signal: Tensor):
        self.x, self.y, self.signal = x, y, signal

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index], self.y[index], self.signal[index]


def signal_coordinates(n: int, d: int = 10, bias: float | None = None, seed: int = 0) -> SignalCoordinates:
    """``n`` examples of the synthetic data in ``d`` dimensions, deterministic given ``seed``.

    bias: probability that the signal sits on coordinate 0 (default 1/d: every coordinate
        equally likely, the notebook's setting); otherwise it sits on one of the others uniformly.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 2:
        raise ValueError(f"d must be an integer >= 2, got {d!r}")
    bias = 1.0 / d if bias is None else bias
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be a probability in [0, 1], got {bias!r}")
    generator = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=generator) < 0.5).long()
    on_zero = torch.rand(n, generator=generator) < bias
    other = 1 + torch.randint(0, d - 1, (n,), generator=generator)
    signal = torch.where(on_zero, torch.zeros_like(other), other)
    x = torch.zeros(n, d)
    x[torch.arange(n), signal] = (2 * y - 1).float()
    return SignalCoordinates(x, y, signal)
