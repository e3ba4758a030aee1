"""The training examples that most help and most hurt each query."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Top:
    """Per query, the ``k`` strongest proponents (largest scores, descending) and opponents (smallest
    scores, ascending): indices into the training set and their scores, each [Q, k]. With fewer than k
    positive (negative) scores, the tail of a list holds examples of the other sign."""

    proponents: Tensor
    proponent_scores: Tensor
    opponents: Tensor
    opponent_scores: Tensor


def top(scores: Tensor, k: int = 10) -> Top:
    """Proponents and opponents of each query from influence ``scores`` [Q, N] (or [N] for one query, read
    as [1, N]); ``k`` is capped at N."""
    if not isinstance(scores, Tensor) or scores.ndim not in (1, 2) or scores.shape[-1] == 0:
        shape = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a tensor [queries, train examples] (or [train examples]); got {shape}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    scores = scores.reshape(-1, scores.shape[-1])
    k = min(int(k), scores.shape[1])
    high = torch.topk(scores, k, dim=1)
    low = torch.topk(scores, k, dim=1, largest=False)
    return Top(high.indices, high.values, low.indices, low.values)
