"""Single-pass input-gradient methods: Saliency, InputXGradient, GuidedBackprop, Deconvnet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..engine import backprop, sample_sum
from .base import Method


@dataclass(frozen=True)
class InputGradientMethod(Method):
    """One forward + backward per example; the map is ``_combine(x, grad)``, input-shaped."""

    rule: ClassVar[str | None] = None

    def _combine(self, x: Tensor, grad: Tensor) -> Tensor:
        return grad

    def _explain(self, model, x, target, chunk):
        def rows(r, e, k):
            xs = x[e]
            return (self._combine(xs, backprop(model, xs, target, e, rule=self.rule).input_grad),)

        return sample_sum(len(x), 1, chunk, rows, x.device)[0].to(x.dtype)


@dataclass(frozen=True)
class Saliency(InputGradientMethod):
    """Vanilla gradient ds/dx (Simonyan et al. 2013). ``abs=True`` (default, as Captum) takes |ds/dx|."""

    abs: bool = True

    @property
    def linear_model(self):
        return None if self.abs else "gradient"

    def _combine(self, x, grad):
        return grad.abs() if self.abs else grad


@dataclass(frozen=True)
class InputXGradient(InputGradientMethod):
    """Gradient times input, x * ds/dx."""

    linear_model: ClassVar[str] = "contribution"

    def _combine(self, x, grad):
        return x * grad


@dataclass(frozen=True)
class GuidedBackprop(InputGradientMethod):
    """Guided backpropagation (Springenberg et al. 2015): at each ReLU-like activation only
    positive gradients pass, grad_in = ReLU(f'(x) * grad_out). Works with in-place ReLUs and
    with SiLU, GELU, ELU, LeakyReLU and PReLU by the same rule. A model in which the engine catches
    no such activation is refused with a ValueError (never the plain gradient)."""

    rule: ClassVar[str] = "guided"


@dataclass(frozen=True)
class Deconvnet(InputGradientMethod):
    """Deconvnet (Zeiler & Fergus 2014): at each ReLU-like activation grad_in = ReLU(grad_out),
    ignoring the forward mask. Refused, as GuidedBackprop, where no such activation is caught."""

    rule: ClassVar[str] = "deconvnet"
