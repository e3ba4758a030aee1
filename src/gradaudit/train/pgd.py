"""Projected gradient descent attacks (Madry et al. 2018) for robust training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.checks import check_choice, check_nonnegative, check_positive_int


def _norms(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.ndim - 1)).clamp(min=1e-12)


@dataclass(frozen=True)
class PGD:
    """Maximise the cross-entropy within an l2 or linf ball of radius ``eps`` around x.

    steps: gradient steps; step_size: default 2.5 * eps / steps; random_start: start from a
    uniform point of the ball. Pixels stay in [lower, upper] (default [0, 1]).
    """

    norm: str = "l2"
    eps: float = 2.0
    steps: int = 7
    step_size: float | None = None
    random_start: bool = True
    lower: float = 0.0
    upper: float = 1.0

    def __post_init__(self):
        check_choice("norm", self.norm, ("l2", "linf"))
        check_nonnegative("eps", self.eps)
        check_positive_int("steps", self.steps)

    def _project(self, delta: Tensor) -> Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        return delta * (self.eps / _norms(delta)).clamp(max=1.0)

    def _start(self, x: Tensor, generator) -> Tensor:
        if not self.random_start:
            return torch.zeros_like(x)
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) * 2 - 1
        if self.norm == "linf":
            return noise * self.eps
        radius = torch.rand((len(x),) + (1,) * (x.ndim - 1), generator=generator, dtype=x.dtype, device=x.device)
        return noise / _norms(noise) * radius * self.eps

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Adversarial examples [B, ...] for ``model`` at ``x`` with labels ``y``; the
        model's parameters receive no gradient."""
        step = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        delta = self._project(self._start(x, generator))
        delta = (x + delta).clamp(self.lower, self.upper) - x
        for _ in range(self.steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(x + delta), y)
                (grad,) = torch.autograd.grad(loss, delta)
            direction = grad.sign() if self.norm == "linf" else grad / _norms(grad)
            delta = self._project(delta.detach() + step * direction)
            delta = (x + delta).clamp(self.lower, self.upper) - x
        return (x + delta).detach()
