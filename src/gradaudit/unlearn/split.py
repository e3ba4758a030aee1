"""The forget set: which training examples to unlearn (random share, whole classes, or given indices)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.inputs import Examples, as_examples

SCENARIOS = ("random", "class")


@dataclass
class ForgetSplit:
    """``forget`` and ``retain`` (Examples) partition the training set; ``indices`` [F] are the
    forgotten examples' positions in it; ``classes`` the forgotten classes (class-wise only)."""

    forget: Examples
    retain: Examples
    indices: Tensor
    scenario: str
    classes: tuple = ()


def forget_split(train, *, fraction: float | None = None, classes=None, indices=None, seed: int = 0) -> ForgetSplit:
    """Split ``train`` into forget and retain sets; give exactly one of:

    fraction: a random share of the training examples (seeded; 0.1 in the paper's random forgetting).
    classes: a class index or several: every example of those classes (class-wise forgetting).
    indices: positions in ``train`` (each in [0, N), none repeated).
    """
    examples = as_examples(train, "train")
    n = len(examples)
    if sum(v is not None for v in (fraction, classes, indices)) != 1:
        raise ValueError("give exactly one of fraction, classes or indices to choose the forget set")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
            raise ValueError(f"fraction must be a share in (0, 1); got {fraction!r}")
        count = int(round(fraction * n))
        if count == 0:
            raise ValueError(f"fraction {fraction} of {n} training examples leaves an empty forget set")
        chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].sort().values
        scenario, forgotten = "random", ()
    elif classes is not None:
        forgotten = tuple(int(c) for c in ([classes] if isinstance(classes, numbers.Integral) else classes))
        present = set(examples.y.unique().tolist())
        missing = [c for c in forgotten if c not in present]
        if missing or not forgotten:
            raise ValueError(f"classes {list(forgotten)}: class {missing[0] if missing else '(none)'} has no training "
                             f"example; the training labels are {sorted(present)}")
        chosen = torch.nonzero(torch.isin(examples.y, torch.tensor(forgotten))).flatten()
        if len(chosen) == n:
            raise ValueError(f"classes {list(forgotten)} are every training example; nothing would be retained")
        scenario = "class"
    else:
        chosen = torch.as_tensor(indices, dtype=torch.long).flatten()
        if len(chosen) == 0:
            raise ValueError("indices is empty; the forget set needs at least one training example")
        outside = chosen[(chosen < 0) | (chosen >= n)]
        if len(outside):
            raise ValueError(f"indices must be positions in the training set [0, {n}); {int(outside[0])} is not part "
                             "of the training data")
        if len(chosen.unique()) != len(chosen):
            raise ValueError("indices repeats a training example; give each one once")
        chosen, scenario, forgotten = chosen.sort().values, "indices", ()
    keep = torch.ones(n, dtype=torch.bool)
    keep[chosen] = False
    return ForgetSplit(Examples(examples.x[chosen], examples.y[chosen]), Examples(examples.x[keep], examples.y[keep]),
                       chosen, scenario, forgotten)
