"""A fitted influence model: the damped curvature of a model's training loss, and the scores it gives.

score(q, m) = grad L(q)^T (G + lambda)^-1 grad L(z_m), with G the Gauss-Newton matrix of the mean
training loss (estimated as the strategy says) and both gradients at the labels. Positive: the
training example helps (upweighting it lowers the query's loss). Scores are not divided by N
(kronfluence's convention): score / N predicts how much the query's loss rises when z_m is removed.
A ``measurement`` f replaces the query's loss by -f (score = -grad f^T (G + lambda)^-1 grad L(z_m)):
positive when upweighting z_m raises f, such as the log-probability of a completion.
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
from .losses import cross_entropy, per_example
from .strategies import Curvature
from .terms import Query, check_rank, example_terms, joined, low_rank, position_terms

BY = (None, "layer")


def _negated(measurement: Callable) -> Callable:
    """The query loss whose gradient is the query gradient: minus ``measurement``, checked to be one value per query."""

    def loss(output, y: Tensor) -> Tensor:
        values = measurement(output, y)
        if not isinstance(values, Tensor) or tuple(values.shape) != (len(y),):
            shape = list(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(f"measurement returned {shape}; expected one value per query, a tensor of shape "
                             f"[{len(y)}]")
        return -values

    return loss


class Influence:
    """What ``influence.fit`` returns. ``scores(queries, train)`` [Q, N] (``by="layer"``: {layer: [Q, N]}
    summing to it), ``token_scores(queries, train)`` [Q, N, P] (per position, summing to it),
    ``self_scores(train)`` [N], ``save(folder)``; ``damping`` holds each layer's lambda."""

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
        sequences = callable(getattr(self.loss, "positions", None))
        check_shape(found, self.settings["input_shape"], name, sequences=sequences)
        return found

    def _size(self, x: Tensor) -> int:
        per_example = 2 * sum(layer.size for layer in self.layers) * x.element_size()
        return chunk_size(self.model, x[:2].to(device_of(self.model)), self.settings["batch_size"], per_example)

    def _gradients(self, cap: Capture, x: Tensor, y: Tensor, loss: Callable | None = None) -> list[Tensor]:
        return label_gradients(cap, self.layers, x, y, loss or self.loss)

    def _preconditioned(self, cap: Capture, found, measurement: Callable | None = None,
                        rank: int | None = None) -> list[Query]:
        """The queries' preconditioned gradients, one [Q, out, in] per layer (a low-rank pair at ``rank``, cut
        chunk by chunk: the whole [Q, out, in] is never held), of their loss (``measurement`` None) or of minus
        the measurement."""
        loss = None if measurement is None else _negated(measurement)
        parts = [[low_rank(p, rank) for p in self.curvature.precondition(self._gradients(cap, x, y, loss))]
                 for _, x, y in chunks(found, self._size(found.x), device_of(self.model))]
        return [joined(p) for p in zip(*parts, strict=True)]

    def _start(self, queries, train, measurement, rank):
        check_rank(rank)
        if measurement is not None and not callable(measurement):
            raise TypeError("measurement must be None (the query's loss) or a callable (output, y) -> "
                            f"Tensor[queries], got {type(measurement).__name__}")
        return self._examples(queries, "queries"), self._examples(train, "train")

    def scores(self, queries, train, by: str | None = None, measurement: Callable | None = None,
               rank: int | None = None) -> Tensor | dict[str, Tensor]:
        """Influence of every example of ``train`` on the loss of every query: Tensor[Q, N].

        queries, train: any dataset ``train.fit`` accepts, of (x, y) examples shaped as the fitted ones.
        by: None, or "layer" for {layer name: Tensor[Q, N]}, the contribution of each layer's weights
            (they sum to the total).
        measurement: None (the score is positive when the example lowers the query's loss), or a callable
            ``(output, y) -> Tensor[Q]``, a quantity per query the score is positive for raising (the query
            gradient is that of minus it; ``sequences.log_probability``: log p(completion | prompt)).
        rank: None keeps the preconditioned query gradients whole; r keeps each layer's at rank r (Grosse et al.),
            factored (left [Q, out, r], right [Q, r, in]) throughout the scoring.
        Memory: the queries' preconditioned gradients (at rank r: Q x r x (out + in) per layer), and one chunk of
        training gradients at a time (at rank r: the chunk's layer inputs and output gradients, never [B, out, in]).
        """
        check_choice("by", by, BY)
        found_q, found_t = self._start(queries, train, measurement, rank)
        with capture(self.model, [(layer.name, layer.module) for layer in self.layers]) as cap:
            pre = self._preconditioned(cap, found_q, measurement, rank)
            keys = [layer.name if by == "layer" else "total" for layer in self.layers]
            out = {}
            for rows, x, y in chunks(found_t, self._size(found_t.x), device_of(self.model)):
                output = cap.forward(x)
                grads = cap.gradients(per_example(self.loss, output, y))
                for key, layer, p, a, g in zip(keys, self.layers, pre, cap.inputs, grads, strict=True):
                    terms = example_terms(p, layer.rows(a), layer.output_rows(g))
                    if key not in out:
                        out[key] = terms.new_zeros(len(found_q), len(found_t))
                    out[key][:, rows] += terms
        return out if by == "layer" else out["total"]

    def token_scores(self, queries, train, measurement: Callable | None = None, rank: int | None = None) -> Tensor:
        """Each position's term of each training example's score, Tensor[Q, N, P] (P positions per example:
        a token sequence's tokens); summed over P it is ``scores``. The term of position p is what the layers'
        gradient terms at p (g_p a_p^T, summed over the tracked layers) contribute, not the influence of that
        position alone. Every tracked layer must see the same P positions. Arguments as ``scores``."""
        found_q, found_t = self._start(queries, train, measurement, rank)
        out = None
        with capture(self.model, [(layer.name, layer.module) for layer in self.layers]) as cap:
            pre = self._preconditioned(cap, found_q, measurement, rank)
            for rows, x, y in chunks(found_t, self._size(found_t.x), device_of(self.model)):
                output = cap.forward(x)
                grads = cap.gradients(per_example(self.loss, output, y))
                for layer, p, a, g in zip(self.layers, pre, cap.inputs, grads, strict=True):
                    terms = position_terms(p, layer.rows(a), layer.output_rows(g))
                    if out is None:
                        out = terms.new_zeros(len(found_q), len(found_t), terms.shape[2])
                    if terms.shape[2] != out.shape[2]:
                        raise ValueError(f"layer {layer.name!r} sees {terms.shape[2]} positions per example, another "
                                         f"tracked layer {out.shape[2]}; token_scores needs the same positions in all")
                    out[:, rows] += terms
        return out

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
