"""TracInCP (Pruthi et al. 2020): influence summed over training checkpoints, lr x grad . grad."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from .fit import fit


def _checkpoints(checkpoints, lrs) -> list[tuple[nn.Module, float]]:
    """``[(model, lr)]`` from models or ``(model, lr)`` pairs, ``lrs`` (one per checkpoint) overriding."""
    if isinstance(checkpoints, nn.Module) or not isinstance(checkpoints, Sequence) or not checkpoints:
        raise ValueError("checkpoints must be a non-empty list of models or (model, learning rate) pairs")
    pairs = [c if isinstance(c, (tuple, list)) else (c, None) for c in checkpoints]
    if lrs is not None:
        if isinstance(lrs, numbers.Real):
            lrs = [lrs] * len(pairs)
        if len(lrs) != len(pairs):
            raise ValueError(f"lrs has {len(lrs)} learning rates for {len(pairs)} checkpoints; give one per checkpoint")
        pairs = [(model, lr) for (model, _), lr in zip(pairs, lrs, strict=True)]
    out = []
    for i, (model, lr) in enumerate(pairs):
        if not isinstance(model, nn.Module):
            raise ValueError(f"checkpoints[{i}] is a {type(model).__name__}; expected a model or (model, lr)")
        if lr is None:
            lr = 1.0
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
            raise ValueError(f"the learning rate of checkpoints[{i}] must be a number, got {lr!r}")
        out.append((model, float(lr)))
    return out


def tracin(checkpoints, queries, train, lrs=None, layers=None, loss: Callable | None = None,
           batch_size: int | None = None) -> Tensor:
    """TracInCP scores [Q, N]: sum over checkpoints of lr x grad L(query) . grad L(train example).

    checkpoints: models saved along training, or ``(model, lr)`` pairs (the learning rate in force
        after each); a bare model counts with lr 1 unless ``lrs`` (one number per checkpoint, or one for
        all) says otherwise.
    queries, train, layers, loss, batch_size: as for ``influence.fit``; the gradients are those of the
        tracked Linear and Conv2d weights at the labels. Positive = the training example helped.
    """
    total = None
    for model, lr in _checkpoints(checkpoints, lrs):
        scores = fit(model, train, strategy="identity", layers=layers, loss=loss,
                     batch_size=batch_size).scores(queries, train) * lr
        total = scores if total is None else total + scores
    return total
