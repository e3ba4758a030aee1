"""Ready-made targets for outputs other than class logits [B, K]: ``ga.targets.Segmentation``,
``Similarity`` and ``TimeStep``.

Each is a ``Target``: any method takes it as ``target=`` and it scores every row a method evaluates
for the example that row belongs to (its per-example class, mask or reference follow the rows of
noise samples and path steps). Each is also a plain callable ``output -> Tensor[B]``.
Formulas as pytorch-grad-cam's ``utils/model_targets.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.target import Target, class_indices


def _shape(output) -> str:
    return str(list(output.shape)) if isinstance(output, Tensor) else type(output).__name__


def _per_example(value: Tensor, rows: Tensor, ndim: int) -> Tensor:
    """``value`` for each row: indexed by ``rows`` when it has a batch axis (``ndim`` + 1 axes), else shared."""
    return value[rows.to(value.device)] if value.ndim == ndim + 1 else value.expand(len(rows), *value.shape)


class _Callable(Target):
    def __call__(self, output) -> Tensor:
        """Scores [B] of a model output for a batch of B examples."""
        return self.scores(output, torch.arange(len(output), device=output.device))


class Segmentation(_Callable):
    """Sum of class ``cls``'s output over a mask, for a segmentation output [B, K, H, W].

    cls: int or LongTensor[B]. mask: [H, W] (every example) or [B, H, W]; bool, or float weights.
    None: the pixels whose predicted class (argmax over K of the output being scored) is ``cls``;
    with multi-sample methods that is each sample's own prediction, so pass a mask to hold it fixed.
    """

    def __init__(self, cls, mask: Tensor | None = None):
        self.cls = class_indices(cls, "Segmentation cls")
        if mask is not None and (not isinstance(mask, Tensor) or mask.ndim not in (2, 3)):
            raise ValueError(f"Segmentation mask must be a tensor [height, width] or [batch, height, width]; got "
                             f"{_shape(mask)}")
        self.mask = mask

    def scores(self, output, rows):
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise ValueError(f"Segmentation needs a model output [batch, classes, height, width]; got {_shape(output)}")
        classes = self.cls._per_row(output[:, :, 0, 0], rows)          # [R], checked against K
        maps = output[torch.arange(len(output), device=output.device), classes]        # [R, H, W]
        if self.mask is None:
            mask = output.detach().argmax(1) == classes[:, None, None]
        else:
            if tuple(self.mask.shape[-2:]) != tuple(maps.shape[1:]):
                raise ValueError(f"Segmentation mask has shape {list(self.mask.shape)}; the output's maps are "
                                 f"{list(maps.shape[1:])}")
            mask = _per_example(self.mask.to(output.device), rows, 2)
        return (maps * mask.to(maps.dtype)).sum((1, 2))

    def select(self, rows):
        new = Segmentation.__new__(Segmentation)
        new.cls = self.cls.select(rows)
        new.mask = self.mask if self.mask is None or self.mask.ndim == 2 else self.mask[rows.to(self.mask.device)]
        return new


class Similarity(_Callable):
    """Cosine similarity of an embedding output [B, D] to ``reference`` [D] (every example) or [B, D]."""

    def __init__(self, reference: Tensor):
        if not isinstance(reference, Tensor) or reference.ndim not in (1, 2):
            raise ValueError(f"Similarity reference must be an embedding [dim] or [batch, dim]; got "
                             f"{_shape(reference)}")
        self.reference = reference.detach()

    def scores(self, output, rows):
        if not isinstance(output, Tensor) or output.ndim != 2 or output.shape[1] != self.reference.shape[-1]:
            raise ValueError(f"Similarity needs a model output [batch, {self.reference.shape[-1]}] like its reference; "
                             f"got {_shape(output)}")
        reference = _per_example(self.reference.to(output), rows, 1)
        return F.cosine_similarity(output, reference, dim=1)

    def select(self, rows):
        return self if self.reference.ndim == 1 else Similarity(self.reference[rows.to(self.reference.device)])


class TimeStep(_Callable):
    """Output of class ``cls`` (int or LongTensor[B]) at time step ``t`` (negative counts from the end)
    of a sequence output [B, T, K]."""

    def __init__(self, t: int, cls):
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"TimeStep t must be an int (a time step; negative counts from the end), got {t!r}")
        self.t, self.cls = t, class_indices(cls, "TimeStep cls")

    def scores(self, output, rows):
        if not isinstance(output, Tensor) or output.ndim != 3:
            raise ValueError(f"TimeStep needs a model output [batch, time, classes]; got {_shape(output)}")
        if not -output.shape[1] <= self.t < output.shape[1]:
            raise ValueError(f"TimeStep t={self.t} is out of range for an output of {output.shape[1]} time steps")
        return self.cls.scores(output[:, self.t], rows)

    def select(self, rows):
        return TimeStep(self.t, self.cls.select(rows).classes)


__all__ = ["Segmentation", "Similarity", "TimeStep"]
