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
from ..engine.packing import check_reference_set, references
from .base import BaselineGap, Method, broadcast_baseline, fix_target


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
class DeepLift(BaselineGap, _Rescale):
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


@dataclass(frozen=True)
class DeepLiftShap(_Rescale):
    """DeepLIFT averaged over a distribution of references: mean over the M rows of ``baselines``
    [M, ...] (per-example shape) of DeepLIFT with that reference (as Captum's ``DeepLiftShap``)."""

    baselines: Tensor = None

    def __post_init__(self):
        check_reference_set("baselines", self.baselines)

    def _count(self) -> int:
        return len(self.baselines[0] if isinstance(self.baselines, (tuple, list)) else self.baselines)

    def _reference(self, x, examples, samples):
        return references(self.baselines, x, "baselines")[samples]
