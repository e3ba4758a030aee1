"""Turning a model output and a user's ``target`` into one scalar score per example row.

Methods evaluate many rows per example (noise samples, path steps). A ``Target`` therefore
scores a batch of rows given ``rows``: LongTensor[R], the example each row belongs to.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor


def class_logits(output) -> Tensor:
    """The model output as [R, C] class scores, or a clear error."""
    if not isinstance(output, Tensor) or output.ndim != 2:
        shape = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"model output is {shape}, but a class target needs logits of shape "
            "[batch, classes]; pass a callable target (output -> Tensor[batch]) instead"
        )
    return output


class Target:
    """How a model output becomes one score per row."""

    def scores(self, output, rows: Tensor) -> Tensor:
        """Scores of shape [R] for ``output`` whose row i belongs to example ``rows[i]``."""
        raise NotImplementedError

    def fixed(self, predict: Callable[[], Tensor]) -> Target:
        """This target with "the predicted class" pinned down (``predict`` gives LongTensor[B])."""
        return self

    def select(self, rows: Tensor) -> Target:
        """The target for a new batch whose row i is example ``rows[i]`` of this one."""
        return self


class Predicted(Target):
    """The class the model predicts for each row (``target=None``)."""

    def scores(self, output, rows):
        logits = class_logits(output)
        return logits.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)

    def fixed(self, predict):
        return Classes(predict())


class Classes(Target):
    """One class per example (LongTensor[B]) or one for all (a 0-d LongTensor)."""

    def __init__(self, classes: Tensor):
        self.classes = classes

    def _per_row(self, logits: Tensor, rows: Tensor) -> Tensor:
        n = logits.shape[1]
        classes = self.classes.to(logits.device)
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= n):
            bad = classes[(classes < 0) | (classes >= n)][0].item()
            raise ValueError(
                f"target class {bad} is out of range for a model with {n} outputs "
                f"(expected 0..{n - 1})"
            )
        if classes.ndim == 0:
            return classes.expand(len(rows))
        return classes[rows.to(logits.device)]

    def scores(self, output, rows):
        logits = class_logits(output)
        return logits.gather(1, self._per_row(logits, rows)[:, None]).squeeze(1)

    def select(self, rows):
        return self if self.classes.ndim == 0 else Classes(self.classes[rows.to(self.classes.device)])


class Function(Target):
    """A user callable ``output -> Tensor[R]``: any scalar per row (a contrast, a loss...)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def scores(self, output, rows):
        scores = self.fn(output)
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (len(rows),):
            shape = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(
                f"target callable returned {shape}; expected one score per example, a tensor "
                f"of shape [{len(rows)}]"
            )
        return scores


class Contrast(Target):
    """Logit ``a`` minus logit ``b``: "why a rather than b?". ``a``/``b``: int or LongTensor[B].

    Also callable on a model output ([B, C] -> [B]) so it can be used outside gradaudit.
    """

    def __init__(self, a, b):
        self.a, self.b = class_indices(a, "Contrast a"), class_indices(b, "Contrast b")

    def scores(self, output, rows):
        return self.a.scores(output, rows) - self.b.scores(output, rows)

    def select(self, rows):
        new = Contrast.__new__(Contrast)
        new.a, new.b = self.a.select(rows), self.b.select(rows)
        return new

    def __call__(self, output: Tensor) -> Tensor:
        return self.scores(output, torch.arange(len(output), device=output.device))


def class_indices(value, name: str, batch: int | None = None) -> Classes:
    """Validate an int or integer tensor of classes into ``Classes``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, Tensor, list, tuple)):
        raise TypeError(f"{name} must be an int or a LongTensor of shape [batch], got {type(value).__name__}")
    tensor = torch.as_tensor(value)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {tensor.dtype}")
    if tensor.ndim > 1 or (batch is not None and tensor.ndim == 1 and len(tensor) != batch):
        raise ValueError(
            f"{name} has shape {list(tensor.shape)}; expected an int or shape [{batch or 'batch'}]"
        )
    return Classes(tensor.long())


def as_target(target, batch: int) -> Target:
    """Turn the public ``target`` argument into a ``Target`` for a batch of ``batch`` examples.

    Accepts None (predicted class), an int, a LongTensor of shape [batch], a ``Target`` such as
    ``Contrast``, or a callable ``output -> Tensor[batch]``.
    """
    if target is None:
        return Predicted()
    if isinstance(target, Target):
        return target
    if callable(target) and not isinstance(target, Tensor):
        return Function(target)
    return class_indices(target, "target", batch)
