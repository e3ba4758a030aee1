"""The CAM family: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++ and Guided Grad-CAM.

Each map ends in a ReLU of a channel-weighted sum of the layer's activations, as the papers define
it. Feature maps may have 1, 2 or 3 spatial axes ([R, C, L], [R, C, H, W], [R, C, D, H, W]); the
means and sums "over ij" run over all of them, and maps are [B, *spatial]. Where no weighted sum is
positive the map is exactly zero everywhere (a black panel); ``relu=False`` returns the sum before
that ReLU, so its negative evidence can be seen.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch
from torch import Tensor

from ..engine import backprop, sample_sum
from ..engine.noise import GaussianNoise, noise_scale, noisy
from .base import LayerMethod, fix_target
from .gradient import GuidedBackprop
from .noise import check_noise


def _dims(a: Tensor) -> tuple[int, ...]:
    return tuple(range(2, a.ndim))


def gradcam_plus_plus(a: Tensor, g1: Tensor, g2: Tensor, g3: Tensor, relu: bool = True) -> Tensor:
    """Grad-CAM++ map [R, *spatial] from activations and the first three gradient powers [R, C, *spatial].

    alpha = g^2 / (2 g^2 + sum_ab(a) g^3) (0 where the denominator is 0),
    w_k = sum_ij alpha * ReLU(g), map = ReLU(sum_k w_k a_k)  (Chattopadhyay et al. 2018);
    ``relu=False`` leaves out the final ReLU.
    """
    total = a.sum(_dims(a), keepdim=True)
    denominator = 2 * g2 + total * g3
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * g1.clamp(min=0)).sum(_dims(a), keepdim=True)
    weighted = (weights * a).sum(1)
    return weighted.clamp(min=0) if relu else weighted


@dataclass(frozen=True)
class CAMMethod(LayerMethod):
    """Base of the CAM family: a layer method whose map is ReLU(sum_k w_k a_k).

    relu: apply that final ReLU (True, the papers' map). False returns the weighted sum itself,
        signed: negative where the layer's evidence speaks against the target. Use it when the
        default map is all zero (no weighted sum > 0) to see what the layer holds.
    """

    _: KW_ONLY
    relu: bool = True


@dataclass(frozen=True)
class GradCAM(CAMMethod):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k mean_ij(g_k) a_k) at ``layer``. [B, H, W].
    ``relu=False``: sum_k mean_ij(g_k) a_k, signed."""

    def _map(self, a, g):
        weighted = (g.mean(_dims(a), keepdim=True) * a).sum(1)
        return weighted.clamp(min=0) if self.relu else weighted


@dataclass(frozen=True)
class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ with the exponential-score closed form (as pytorch-grad-cam). [B, H, W].
    ``relu=False``: the weighted sum before the final ReLU, signed."""

    def _map(self, a, g):
        g2 = g * g
        return gradcam_plus_plus(a, g, g2, g2 * g, self.relu)


@dataclass(frozen=True)
class SmoothGradCAMPlusPlus(CAMMethod):
    """Smooth Grad-CAM++ (Omeiza et al. 2019): the first, second and third powers of the layer
    gradient are averaged over ``samples`` noisy copies *before* forming alpha and the weights;
    activations come from the clean input. ``noise``/``sigma``/``seed`` as in ``SmoothGrad``;
    ``relu`` as in ``CAMMethod``. [B, H, W]."""

    samples: int = 25
    noise: float = 0.15
    sigma: float | None = None
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_noise(self.noise, self.sigma, self.samples)

    @property
    def evaluations(self) -> int:
        return self.samples + 1

    def _explain(self, model, x, target, chunk):
        target = fix_target(model, x, target, chunk)
        layer, read = self._observed(model, x)
        scale = noise_scale(x, self.noise, self.sigma)
        draws = GaussianNoise(self.seed, len(x), x.shape[1:], x.dtype)

        def clean(r, e, k):
            p = backprop(model, x[e], target, e, layers=[layer], wrt_input=False)
            return (read(p.activations[0], p.gradients[0])[0],)

        def powers(r, e, k):
            p = backprop(model, noisy(x, e, k, scale, draws), target, e, layers=[layer], wrt_input=False)
            g = read(p.activations[0], p.gradients[0])[1]
            g2 = g * g
            return g, g2, g2 * g

        a = sample_sum(len(x), 1, chunk, clean, x.device)[0]
        g1, g2, g3 = (s / self.samples for s in sample_sum(len(x), self.samples, chunk, powers, x.device))
        return self._finish(gradcam_plus_plus(a, g1, g2, g3, self.relu), x)


@dataclass(frozen=True)
class GuidedGradCAM(CAMMethod):
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map; input-shaped [B, C, H, W].
    ``relu=False`` multiplies by the signed Grad-CAM map."""

    def _explain(self, model, x, target, chunk):
        target = fix_target(model, x, target, chunk)
        cam = GradCAM(self.layer, upsample=True, interpolation=self.interpolation, relu=self.relu, grid=self.grid,
                      prefix=self.prefix)._explain(model, x, target, chunk)
        return GuidedBackprop()._explain(model, x, target, chunk) * cam.unsqueeze(1)
