"""The CAM family built from one forward + backward: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, Guided Grad-CAM,
LayerCAM, XGradCAM, HiResCAM, GradCAMElementWise, EigenCAM and EigenGradCAM.

Each map ends in a ReLU of a (channel- or element-) weighted sum of the layer's activations, as the papers and
pytorch-grad-cam 1.5.7 define it. Feature maps may have 1, 2 or 3 spatial axes ([R, C, L], [R, C, H, W],
[R, C, D, H, W]); the means and sums "over ij" run over all of them, and maps are [B, *spatial]. Where no weighted
sum is positive the map is exactly zero everywhere (a black panel); ``relu=False`` returns the sum before that
ReLU, so its negative evidence can be seen.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch
from torch import Tensor

from ..engine import backprop, observe, sample_sum
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

    def _relu(self, weighted: Tensor) -> Tensor:
        return weighted.clamp(min=0) if self.relu else weighted

    def _activations(self, model, x: Tensor, chunk: int) -> Tensor:
        """The layer's activations [B, C, *spatial] (channels first) from gradient-free forwards, ``chunk`` rows
        at a time: what the CAMs that need no gradient (EigenCAM, ScoreCAM, AblationCAM) start from."""
        layer, read = self._observed(model, x)

        def rows(r, e, k):
            a = observe(model, x[e], e, [layer])[0]
            return (read(a, a)[0],)

        return sample_sum(len(x), 1, chunk, rows, x.device)[0]


@dataclass(frozen=True)
class GradCAM(CAMMethod):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k mean_ij(g_k) a_k) at ``layer``. [B, H, W].
    ``relu=False``: sum_k mean_ij(g_k) a_k, signed."""

    def _map(self, a, g):
        return self._relu((g.mean(_dims(a), keepdim=True) * a).sum(1))


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


@dataclass(frozen=True)
class LayerCAM(CAMMethod):
    """LayerCAM (Jiang et al. 2021): ReLU(sum_k ReLU(g_k) * a_k), the gradient's positive part as a weight at every
    location (pytorch-grad-cam's ``LayerCAM``). [B, *spatial]. ``relu=False``: the sum before the final ReLU."""

    def _map(self, a, g):
        return self._relu((g.clamp(min=0) * a).sum(1))


@dataclass(frozen=True)
class XGradCAM(CAMMethod):
    """XGradCAM (Fu et al. 2020): w_k = sum_ij(a_kij g_kij) / (sum_ij a_kij + 1e-7), map ReLU(sum_k w_k a_k).
    The 1e-7 is pytorch-grad-cam's guard against an all-zero channel (the paper has none). [B, *spatial]."""

    def _map(self, a, g):
        weights = (a * g).sum(_dims(a), keepdim=True) / (a.sum(_dims(a), keepdim=True) + 1e-7)
        return self._relu((weights * a).sum(1))


@dataclass(frozen=True)
class HiResCAM(CAMMethod):
    """HiResCAM (Draelos & Carin 2020): ReLU(sum_k g_k * a_k), the gradient multiplied element-wise rather than
    averaged, so the map sums to the score's first-order change at the layer. [B, *spatial]."""

    def _map(self, a, g):
        return self._relu((g * a).sum(1))


@dataclass(frozen=True)
class GradCAMElementWise(CAMMethod):
    """pytorch-grad-cam's GradCAMElementWise: sum_k ReLU(g_k * a_k), each element's product clipped before the
    channel sum (so ``relu`` changes nothing: the sum is never negative). [B, *spatial]."""

    def _map(self, a, g):
        return self._relu((g * a).clamp(min=0).sum(1))


def first_component(m: Tensor) -> Tensor:
    """Projection [R, *spatial] of the locations of m [R, C, *spatial] (vectors of C values, centred over the
    locations) on their first principal component, signed so that it correlates non-negatively with the
    channel sum sum_k m_k.

    An SVD fixes a component only up to its sign, and pytorch-grad-cam (``get_2d_projection``) keeps whatever
    sign numpy's SVD returns, then applies a ReLU: on some inputs its map is the complement of the salient
    region. Here the sign is chosen so that the projection p satisfies sum_u p_u * sum_k m_ku >= 0 (a tie keeps
    the SVD's sign); |p| is grad-cam's projection exactly.
    """
    flat = m.flatten(2).transpose(1, 2)                                  # [R, locations, C]
    centred = flat - flat.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ vh[:, :1].transpose(1, 2)).squeeze(2)        # [R, locations]
    flip = (projection * flat.sum(2)).sum(1, keepdim=True) < 0
    return torch.where(flip, -projection, projection).view(m.shape[0], *m.shape[2:])


@dataclass(frozen=True)
class EigenGradCAM(CAMMethod):
    """EigenGradCAM (pytorch-grad-cam): ReLU of the first principal component of g * a over locations, signed to
    correlate with sum_k g_k * a_k (HiResCAM's map; see ``first_component``). [B, *spatial]."""

    def _map(self, a, g):
        return self._relu(first_component(g * a))


@dataclass(frozen=True)
class EigenCAM(CAMMethod):
    """EigenCAM (Muhammad & Yeasin 2020): ReLU of the first principal component of the activations over locations,
    signed to correlate with their channel sum (``first_component``). Needs no gradient and ignores the target:
    one gradient-free forward. [B, *spatial]."""

    def _explain(self, model, x, target, chunk):
        return self._finish(self._relu(first_component(self._activations(model, x, chunk))), x)
