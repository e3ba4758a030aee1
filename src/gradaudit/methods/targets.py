"""Ready-made targets for outputs other than class logits [B, K]: ``ga.targets.Segmentation``,
``BoxScore``, ``Similarity`` and ``TimeStep``.

Each is a ``Target``: any method takes it as ``target=`` and it scores every row a method evaluates
for the example that row belongs to (its per-example class, mask or reference follow the rows of
noise samples and path steps). Each is also a plain callable ``output -> Tensor[B]``.
Formulas as pytorch-grad-cam's ``utils/model_targets.py``.
"""

from __future__ import annotations

import warnings

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


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union [M, P] of boxes ``a`` [M, 4] and ``b`` [P, 4] given as (x1, y1, x2, y2)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return intersection / (area_a[:, None] + area_b[None, :] - intersection).clamp(min=1e-12)


class BoxScore(Target):
    """Detection score of reference boxes, for detectors returning torchvision-style outputs: a list with
    one dict per image holding ``boxes`` [P, 4] (x1, y1, x2, y2), ``labels`` [P] and ``scores`` [P].

    For each reference box (``boxes`` [M, 4] with ``labels`` [M], the same for every image, or lists of
    them, one per image) the predicted box with the highest IoU (the first of equals) contributes IoU + its
    score when that IoU is above ``iou`` and its label is the reference's, pytorch-grad-cam's
    ``FasterRCNNBoxScoreTarget`` rule: a better-overlapping box of another label makes the reference
    contribute 0 (the detection there changed class); no other box of its label stands in. The image's
    score is the sum. An image where no reference is matched scores 0, with a warning.
    """

    def __init__(self, boxes, labels, iou: float = 0.5):
        per_image = isinstance(boxes, (list, tuple))
        pairs = list(zip(boxes, labels, strict=True)) if per_image else [(boxes, labels)]
        for box, label in pairs:
            if not isinstance(box, Tensor) or box.ndim != 2 or box.shape[1] != 4:
                raise ValueError(f"BoxScore boxes must be a tensor [M, 4] of (x1, y1, x2, y2) or a list of them, "
                                 f"one per image; got {_shape(box)}")
            if not isinstance(label, Tensor) or label.shape != box.shape[:1]:
                raise ValueError(f"BoxScore labels must be a tensor [M] with one label per box ({len(box)}); got "
                                 f"{_shape(label)}")
        if not 0 <= iou < 1:
            raise ValueError(f"BoxScore iou must be a threshold in [0, 1) (a match needs IoU > iou); got {iou!r}")
        self.pairs, self.per_image, self.iou = pairs, per_image, float(iou)

    def scores(self, output, rows):
        if not isinstance(output, (list, tuple)) or not all(
                isinstance(o, dict) and {"boxes", "labels", "scores"} <= set(o) for o in output):
            raise ValueError("BoxScore needs a detector's output: a list with one dict per image holding boxes "
                             f"[P, 4], labels [P] and scores [P]; got {_shape(output)}")
        found = []
        for row, predicted in zip(rows.tolist(), output, strict=True):
            boxes, labels = self.pairs[row] if self.per_image else self.pairs[0]
            score = predicted["scores"].sum() * 0                  # zero, still joined to the output's graph
            matched = False
            if len(predicted["boxes"]):
                overlap = box_iou(boxes.to(predicted["boxes"]), predicted["boxes"])
                index = overlap.detach().argmax(1)                               # the best box, whatever its label
                best = overlap.detach().gather(1, index[:, None])[:, 0]
                same = labels.to(predicted["labels"].device) == predicted["labels"][index]
                for reference in torch.nonzero((best > self.iou) & same).flatten().tolist():
                    chosen = index[reference]
                    score = score + overlap[reference, chosen] + predicted["scores"][chosen]
                    matched = True
            if not matched:
                warnings.warn(f"BoxScore: no predicted box matches a reference box of image {row} (the box of "
                              f"highest IoU has IoU > {self.iou} and the same label); its score is 0", stacklevel=2)
            found.append(score)
        return torch.stack(found)

    def select(self, rows):
        if not self.per_image:
            return self
        chosen = [self.pairs[r] for r in rows.tolist()]
        return BoxScore([b for b, _ in chosen], [label for _, label in chosen], self.iou)

    def __call__(self, output) -> Tensor:
        """Scores [B] of a detector's output for a batch of B images."""
        return self.scores(output, torch.arange(len(output)))


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


__all__ = ["Segmentation", "BoxScore", "Similarity", "TimeStep", "box_iou"]
