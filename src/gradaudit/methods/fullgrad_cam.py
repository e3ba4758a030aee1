"""FullGrad (Srinivas & Fleuret 2019): the input-gradient term and every convolution's and BatchNorm's
bias-gradient term, each made absolute, normalised and upsampled, summed into one map."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..engine import sample_sum
from ..engine.bias import bias_gradients, bias_layers
from ..engine.checks import check_choice
from ..engine.packing import current_layout
from ..maps import resize
from .base import Method


def _normalised_sum(t: Tensor, size, interpolation: str) -> Tensor:
    """sum_c resize((|t_c| - min) / (max - min + 1e-7)) [R, *size] from t [R, C, *spatial]: each channel scaled
    to [0, 1] over its locations (pytorch-grad-cam's ``scale_accross_batch_and_channels``), then resized."""
    v = t.abs().flatten(2)
    v = v - v.amin(2, keepdim=True)
    v = v / (v.amax(2, keepdim=True) + 1e-7)
    maps = resize(v.reshape(-1, *t.shape[2:]), size, interpolation)
    return maps.view(len(t), t.shape[1], *size).sum(1)


@dataclass(frozen=True)
class FullGrad(Method):
    """FullGrad saliency with pytorch-grad-cam 1.5.7's post-processing. [B, *spatial] at the input's size.

    map = psi(|grad_x s * x|) + sum over biased layers sum_c psi(|b_c * ds/dz_c|), where psi scales each channel
    to [0, 1] over its locations ((v - min) / (max - min + 1e-7)) and resizes it to the input (``interpolation``,
    half-pixel bilinear: cv2.resize's); the biased layers are every Conv1d/2d/3d with a bias and every
    BatchNorm1d/2d/3d (eval-mode bias beta - mean * w / sqrt(var + eps)) whose output has the input's spatial rank
    (``engine.bias``); biases without a spatial map (Linear layers, so a ViT's blocks) do not enter, as in the
    paper's map for CNNs. Not min-max scaled at the end (grad-cam scales the sum to [0, 1]).

    The authors' code (idiap/fullgrad-saliency, ``saliency/fullgrad.py``) scales each *layer* as a whole (eps
    1e-6) and upsamples with ``align_corners=True``; grad-cam scales each channel, which lets a channel with a
    tiny bias-gradient count as much as the largest.
    """

    interpolation: str = "bilinear"

    def __post_init__(self):
        check_choice("interpolation", self.interpolation, ("bilinear", "nearest"))

    def _explain(self, model, x, target, chunk):
        if current_layout() is not None:
            raise ValueError("FullGrad sums maps over one input [B, C, *spatial]; tuple inputs have no one size")
        if not 3 <= x.ndim <= 5:
            raise ValueError(f"FullGrad needs inputs [B, C, L], [B, C, H, W] or [B, C, D, H, W]; got {list(x.shape)}")
        layers = bias_layers(model)
        size = tuple(x.shape[2:])

        def rows(r, e, k):
            grad, biased = bias_gradients(model, x[e], target, e, layers)
            total = _normalised_sum(grad * x[e], size, self.interpolation)
            for term in biased:
                if term.ndim == x.ndim:
                    total = total + _normalised_sum(term, size, self.interpolation)
            return (total,)

        return sample_sum(len(x), 1, chunk, rows, x.device)[0]
