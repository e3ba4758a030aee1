"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017) and DeepLiftShap (Lundberg & Lee 2017).

Each example runs through the model beside its reference, as one batch [x; x'], under the
engine's ``rescale`` backward rule; the multipliers times x - x' are the attributions, which
sum to s(x) - s(x') exactly on networks of linear maps, ReLU-like activations and max-pooling
(summation-to-delta), and up to the rule's approximation through sigmoid, tanh or softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..engine import backprop, sample_sum
from ..engine.backprop import predict
from ..engine.packing import references
from .base import Method, broadcast_baseline, fix_target


@dataclass(frozen=True)
class _Rescale(Method):
    """One rescale pass per (example, reference); the attribution is the mean over references."""

    @property
    def linear_model(self):
        return "contribution"

    @property
    def evaluations(self) -> int:
        return 2 * self._count()

    def _count(self) -> int:
        return 1

    def _reference(self, x: Tensor, examples: Tensor, samples: Tensor) -> Tensor:
        raise NotImplementedError

    def _explain(self, model, x, target, chunk):
        target = fix_target(model, x, target, chunk)
        count = self._count()

        def rows(r, e, k):
            inputs, references = x[e], self._reference(x, e, k)
            both = backprop(model, torch.cat([inputs, references]), target, torch.cat([e, e]), rule="rescale")
            return ((inputs - references) * both.input_grad[: len(e)] / count,)

        return sample_sum(len(x), count, max(1, chunk // 2), rows, x.device)[0].to(x.dtype)


@dataclass(frozen=True)
class DeepLift(_Rescale):
    """DeepLIFT, Rescale rule: (x - x') times the multipliers of the rescale backward rule.

    baseline: x', as for ``IntegratedGradients``: a scalar, a tensor broadcastable to the inputs
        ([B, ...] or [...]), or a callable ``inputs -> baseline``. Default 0.
    Rules (the engine's ``rescale`` mode): ReLU, LeakyReLU, ELU, CELU, SELU, SiLU, GELU, Mish,
    Softplus, Sigmoid, Tanh elementwise; softmax with its per-row mean removed; max-pooling as
    Captum. ``with_delta`` returns the summation-to-delta gap per example.
    """

    baseline: float | Tensor = 0.0

    def _reference(self, x, examples, samples):
        return broadcast_baseline(self.baseline, x)[examples]

    def with_delta(self, model, inputs, target=None, *, forward_args=(), batch_size=None) -> tuple:
        """Attributions and the summation-to-delta gap [B]: sum(attr) - (s(x) - s(x'))."""

        def body(model, x, target, chunk):
            target = fix_target(model, x, target, chunk)
            attr = self._explain(model, x, target, chunk)
            gap = predict(model, x, target, chunk) - predict(model, broadcast_baseline(self.baseline, x), target,
                                                             chunk)
            return attr, attr.flatten(1).sum(1) - gap

        return self._run(model, inputs, target, batch_size, body, forward_args)


@dataclass(frozen=True)
class DeepLiftShap(_Rescale):
    """DeepLIFT averaged over a distribution of references: mean over the M rows of ``baselines``
    [M, ...] (per-example shape) of DeepLIFT with that reference (as Captum's ``DeepLiftShap``)."""

    baselines: Tensor = None

    def __post_init__(self):
        if not isinstance(self.baselines, (Tensor, tuple, list)) or len(self.baselines) == 0:
            raise TypeError("baselines must be a tensor [M, ...] of M >= 1 reference inputs (a tuple of them, one "
                            "per input, for tuple inputs)")

    def _count(self) -> int:
        return len(self.baselines[0] if isinstance(self.baselines, (tuple, list)) else self.baselines)

    def _reference(self, x, examples, samples):
        return references(self.baselines, x, "baselines")[samples]
