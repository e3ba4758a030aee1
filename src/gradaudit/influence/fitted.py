"""A fitted influence model: the damped curvature of a model's training loss, and the scores it gives.

score(q, m) = grad L(q)^T (G + lambda)^-1 grad L(z_m), with G the Gauss-Newton matrix of the mean
training loss (estimated as the strategy says) and both gradients at the labels. Positive: the
training example helps (upweighting it lowers the query's loss). Scores are not divided by N
(kronfluence's convention): score / N predicts how much the query's loss rises when z_m is removed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..engine.capture import Capture, capture
from ..engine.checks import check_choice
from . import store
from .factors import label_gradients
from .inputs import check_shape, chunk_size, chunks, device_of, examples
from .layers import Layer
from .losses import cross_entropy
from .strategies import Curvature

BY = (None, "layer")


class Influence:
    """What ``influence.fit`` returns. ``scores(queries, train)`` [Q, N] (``by="layer"``: {layer: [Q, N]}
    summing to it), ``self_scores(train)`` [N], ``save(folder)``; ``damping`` holds each layer's lambda."""

    def __init__(self, model: nn.Module, layers: list[Layer], curvature: Curvature, settings: dict,
                 loss: Callable | None):
        self.model, self.layers, self.curvature, self.settings = model, layers, curvature, settings
        self.loss = loss or cross_entropy

    @property
    def strategy(self) -> str:
        return self.curvature.strategy

    @property
    def damping(self) -> dict[str, float]:
        """{layer name: lambda added to its curvature} (empty for identity)."""
        return dict(self.curvature.damping)

    def _examples(self, data, name: str):
        found = examples(data, name)
        check_shape(found, self.settings["input_shape"], name)
        return found

    def _size(self, x: Tensor) -> int:
        per_example = 2 * sum(layer.size for layer in self.layers) * x.element_size()
        return chunk_size(self.model, x[:2].to(device_of(self.model)), self.settings["batch_size"], per_example)

    def _gradients(self, cap: Capture, x: Tensor, y: Tensor) -> list[Tensor]:
        return label_gradients(cap, self.layers, x, y, self.loss)

    def _preconditioned(self, cap: Capture, found) -> list[Tensor]:
        """The queries' preconditioned gradients, one [Q, out, in] per layer."""
        parts = [self.curvature.precondition(self._gradients(cap, x, y))
                 for _, x, y in chunks(found, self._size(found.x), device_of(self.model))]
        return [torch.cat(p) for p in zip(*parts, strict=True)]

    def scores(self, queries, train, by: str | None = None) -> Tensor | dict[str, Tensor]:
        """Influence of every example of ``train`` on the loss of every query: Tensor[Q, N].

        queries, train: any dataset ``train.fit`` accepts, of (x, y) examples shaped as the fitted ones.
        by: None, or "layer" for {layer name: Tensor[Q, N]}, the contribution of each layer's weights
            (they sum to the total).
        Memory: the queries' preconditioned gradients, and one chunk of training gradients at a time.
        """
        check_choice("by", by, BY)
        found_q, found_t = self._examples(queries, "queries"), self._examples(train, "train")
        with capture(self.model, [(layer.name, layer.module) for layer in self.layers]) as cap:
            pre = self._preconditioned(cap, found_q)
            keys = [layer.name if by == "layer" else "total" for layer in self.layers]
            out = {key: pre[0].new_zeros(len(found_q), len(found_t)) for key in keys}
            for rows, x, y in chunks(found_t, self._size(found_t.x), device_of(self.model)):
                for key, p, g in zip(keys, pre, self._gradients(cap, x, y), strict=True):
                    out[key][:, rows] += torch.einsum("qoi,boi->qb", p, g)
        return out if by == "layer" else out["total"]

    def self_scores(self, train) -> Tensor:
        """Each training example's influence on its own loss, Tensor[N] (the diagonal of ``scores(train, train)``)."""
        found = self._examples(train, "train")
        parts = []
        with capture(self.model, [(layer.name, layer.module) for layer in self.layers]) as cap:
            for _, x, y in chunks(found, self._size(found.x), device_of(self.model)):
                grads = self._gradients(cap, x, y)
                pre = self.curvature.precondition(grads)
                parts.append(sum((p * g).flatten(1).sum(1) for p, g in zip(pre, grads, strict=True)))
        return torch.cat(parts)

    def save(self, folder):
        """Write the fitted factors and settings into ``folder``; ``influence.load(folder, model)`` reads them."""
        settings = {**self.settings, "strategy": self.strategy, "layers": [layer.name for layer in self.layers],
                    "shapes": [list(layer.shape) for layer in self.layers], "damping_per_layer": self.damping}
        return store.write(folder, settings, self.curvature.factors)
