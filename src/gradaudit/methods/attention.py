"""Attention methods for transformers: AttentionRollout, GradientRollout and AttnLRP.

The engine catches each self-attention call's probabilities A [N, heads, T, T] (``engine.attention``:
Hugging Face models are switched to eager attention for the call and restored). From them:

- AttentionRollout (Abnar & Zuidema 2020): per layer the heads fused (mean, max or min) into
  A_l [T, T], Ahat_l = (A_l + I) normalised by rows, joint = Ahat_L ... Ahat_1.
- GradientRollout (Chefer et al. 2021b, "Generic attention-model explainability"): with G_l the
  gradient of the target's score with respect to A_l, Abar_l = mean over heads of (G_l * A_l)^+,
  R = I, and for each layer in order R <- R + Abar_l R (so R = (I + Abar_L) ... (I + Abar_1)); no
  row normalisation, as their code.

The map is one row of the joint matrix, the explained ``position``'s: for images the class token's
(position 0) over the patch tokens, prefix tokens (class, distillation, register) dropped, reshaped to
the patch grid and upsampled to the image like a layer method (grid inference: ``tokens.FeatureMap``);
for token inputs [B, T, D] the row over all T tokens ([B, T]), by default the last token's for a
causal model (lower-triangular attention) and the first's (``[CLS]``) otherwise.

AttnLRP (Achtibat et al. 2024) is input x gradient under the engine's ``attnlrp`` / ``cp`` backward
rules and returns an input-shaped map, like InputXGradient.
"""

from __future__ import annotations

import numbers
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..engine import sample_sum
from ..engine.attention import attention_pass
from ..engine.checks import check_choice
from ..engine.packing import current_layout
from ..maps import resize
from .base import Method
from .feature_map import FeatureMap, check_grid
from .gradient import InputGradientMethod

HEAD_FUSIONS = ("mean", "max", "min")


def is_causal(attention: Tensor) -> bool:
    """Whether attention probabilities [N, heads, T, T] are lower-triangular (a decoder's)."""
    return attention.shape[-1] > 1 and not bool(torch.triu(attention, diagonal=1).any())


@dataclass(frozen=True)
class AttentionMethod(Method):
    """A map read from a [T, T] matrix built from the attention probabilities of every layer.

    position: the token whose row is the map (None: 0, the class token, for images; for token inputs
        the last token of a causal model, else 0).
    upsample, interpolation, grid, prefix: as for layer methods (``LayerMethod``): images only.
    Returns [B, H, W] for images ([B, h, w] with ``upsample=False``), [B, T] for token inputs [B, T, D].
    """

    _: KW_ONLY
    position: int | None = None
    upsample: bool = True
    interpolation: str = "bilinear"
    grid: tuple[int, int] | None = None
    prefix: int | None = None

    gradients: ClassVar[bool] = True

    def __post_init__(self):
        if self.position is not None and (isinstance(self.position, bool)
                                          or not isinstance(self.position, numbers.Integral)):
            raise ValueError(f"position must be None or a token index (int), got {self.position!r}")
        check_choice("interpolation", self.interpolation, ("bilinear", "nearest"))
        object.__setattr__(self, "grid", check_grid(self.grid, self.prefix))

    def _joint(self, attentions: list[Tensor], gradients: list[Tensor] | None) -> Tensor:
        """[N, T, T] from the per-layer probabilities [N, heads, T, T] (and their gradients)."""
        raise NotImplementedError

    def matrices(self, model, x: Tensor, target, rows: Tensor) -> tuple[Tensor, bool]:
        """The joint matrix [N, T, T] of one pass of ``x`` [R, ...] (N: the batch attention ran on) and
        whether the model's attention is causal."""
        found = attention_pass(model, x, target, rows, gradients=self.gradients)
        joint = self._joint([_upcast(a) for a in found.attentions],
                            None if found.gradients is None else [_upcast(g) for g in found.gradients])
        return joint.to(x.dtype) if x.is_floating_point() else joint, is_causal(found.attentions[0])

    def _row(self, tokens: int, causal: bool, image: bool) -> int:
        position = self.position if self.position is not None else (tokens - 1 if causal and not image else 0)
        if not -tokens <= position < tokens:
            raise ValueError(f"position={position} is outside the model's {tokens} tokens")
        return position % tokens

    def _explain(self, model, x, target, chunk):
        image = x.ndim == 4 and current_layout() is None
        read = FeatureMap.of(model, x, "attention", self.grid, self.prefix) if image else None

        def rows(r, e, k):
            joint, causal = self.matrices(model, x[e], target, e)
            if len(joint) != len(e):
                raise ValueError(f"attention ran on {len(joint)} sequences for {len(e)} inputs; attention methods "
                                 "need one sequence per input")
            row = joint[:, self._row(joint.shape[-1], causal, image)]                  # [R, T]
            if read is None:
                return (row,)
            _, prefix, cells = read.arrangement((len(row), row.shape[1], 1))
            return (row[:, prefix:].reshape(len(row), *cells),)

        maps = sample_sum(len(x), 1, chunk, rows, x.device)[0]
        maps = maps.to(x.dtype) if x.is_floating_point() else maps
        return resize(maps, x.shape[2:], self.interpolation) if image and self.upsample else maps


def _upcast(t: Tensor) -> Tensor:
    """Half-precision attention in float32 for the products; float32/float64 as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _eye(a: Tensor) -> Tensor:
    return torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)


@dataclass(frozen=True)
class AttentionRollout(AttentionMethod):
    """Attention rollout (Abnar & Zuidema 2020), Chefer's ``compute_rollout_attention``.

    head_fusion: how a layer's heads become one matrix: "mean" (the paper), "max" or "min".
    discard: the fraction (in [0, 1)) of each layer's fused weights to set to 0 before the identity is
        added, Gildenblat's vit-explain rule per example: the int(T^2 x discard) smallest of the [T, T]
        matrix, except element [0, 0] (when it is among them, one fewer is dropped).
    Each layer's (fused + I) is normalised by rows, as Abnar & Zuidema, on purpose unlike vit-explain's
    ``a / a.sum(dim=-1)``, which on its [1, T, T] divides column j by row j's sum (the same only when every
    row of the fused matrix sums to 1: mean fusion without discard).
    No gradient is taken, so integer token ids are accepted as inputs.
    """

    head_fusion: str = "mean"
    discard: float = 0.0

    needs_gradients: ClassVar[bool] = False
    gradients: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        check_choice("head_fusion", self.head_fusion, HEAD_FUSIONS)
        if not isinstance(self.discard, numbers.Real) or not 0.0 <= self.discard < 1.0:
            raise ValueError(f"discard must be a fraction in [0, 1), got {self.discard!r}")

    def _fused(self, a: Tensor) -> Tensor:
        fused = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[self.head_fusion]
        count = int(fused[0].numel() * self.discard)
        if count:
            flat = fused.flatten(1)
            drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(count, 1, largest=False).indices,
                                                                     True)
            drop[:, 0] = False                                    # element [0, 0] is kept, as vit-explain
            fused = flat.masked_fill(drop, 0.0).view_as(fused)
        return fused

    def _joint(self, attentions, gradients):
        joint = None
        for a in attentions:
            step = self._fused(a) + _eye(a[:, 0])
            step = step / step.sum(-1, keepdim=True)
            joint = step if joint is None else step @ joint
        return joint


@dataclass(frozen=True)
class GradientRollout(AttentionMethod):
    """Chefer et al. 2021b: R <- R + mean_heads((dscore/dA * A)^+) R over the layers in order, from R = I."""

    def _joint(self, attentions, gradients):
        relevance = _eye(attentions[0][:, 0])
        for a, g in zip(attentions, gradients, strict=True):
            relevance = relevance + (g * a).clamp(min=0).mean(1) @ relevance
        return relevance


@dataclass(frozen=True)
class AttnLRP(InputGradientMethod):
    """AttnLRP (Achtibat et al. 2024) as the ``lxt`` library's efficient mode: input x gradient under
    the engine's backward rules for transformers (``engine.lrp_rules``): LayerNorm/RMSNorm with the
    standard deviation detached, elementwise activations by the identity rule, and

    variant: "attnlrp" (the uniform rule on q k^T and attention x v: q, k get a quarter of the
        gradient, v a half) or "cp" (conservative propagation, Ali et al. 2022: the attention
        probabilities held constant, relevance only through the values).
    Input-shaped, like InputXGradient. Relevances sum to the explained score up to what biases,
    position embeddings and (for "attnlrp") the softmax absorb. A model without attention the rules can
    catch (no softmax and product q k^T through torch's Python API: a CNN, torch's nn.TransformerEncoder)
    is refused with a ValueError, never explained by the activation and norm rules alone.
    """

    variant: str = "attnlrp"

    def __post_init__(self):
        check_choice("variant", self.variant, ("attnlrp", "cp"))

    @property
    def rule(self) -> str:
        return self.variant

    def _combine(self, x, grad):
        return x * grad
