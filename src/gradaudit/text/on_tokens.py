"""Which gradaudit methods explain tokens through their input embeddings, and how.

The explained input is the prompt embeddings x [B, P, D]; a method's map of that shape is
reduced to one score per token. Per family:

- Input-gradient and path methods (Saliency, InputXGradient, GuidedBackprop, Deconvnet,
  IntegratedGradients, SmoothGrad, DeepLift, DeepLiftShap, GradientShap) and CLIME (a ridge
  fit of the score on Gaussian offsets of every embedding coordinate: a gradient estimate)
  run on x unchanged: the embedding space is continuous and these methods only need that.
- Occlusion, LIME and KernelSHAP remove *features*: on x as given a feature would be one
  embedding coordinate, and a token with half of its coordinates zeroed is no token at all
  (nor is the sum of coordinate Shapley values over a token that token's Shapley value).
  They run on the tokens instead, one prompt at a time (its features are its own tokens, so a
  padded batch gives what each prompt gives alone): the prompt's embeddings [T, D] are shown to
  them as an image [1, D, T, 1] whose channels are the embedding coordinates and whose rows are
  the tokens, so an Occlusion window covers ``window`` whole tokens and a LIME/KernelSHAP
  feature is one token. A removed token's embedding takes the method's constant
  (``Occlusion(fill=...)``, ``LIME/KernelSHAP(baseline=...)``, 0 by default: the same zero
  embedding as IntegratedGradients' default baseline), and KernelSHAP's token Shapley values
  then sum to score - baseline_score.
- Random is the control: U(0, 1) per embedding coordinate, no model evaluation.
- AttnLRP is input x gradient under the engine's AttnLRP rules: it runs on x unchanged.
- AttentionRollout and GradientRollout read one row of a [L, L] matrix over the built sequence
  (prompt, then the teacher-forced continuation) of the first branch: the row of the position whose
  logits predict the first scored token (a causal LM's continuation), else of the last real token for
  a causal model or of the first token ([CLS]) for a bidirectional one (a method's ``position``, in
  sequence positions, overrides it); its entries over the prompt are the token scores
  (``TokenAttention``). SmoothGrad around them is refused: they are not input gradients.
- Layer methods (the CAM family, LayerSaliency, NormGrad, LinearApprox, GuidedGradCAM,
  Combine) map the spatial feature maps of a convolutional network; a language model has none,
  and a token layer [B, T, C] would be misread as [B, C, L]. Refused.
- FullGrad sums bias-gradient maps of convolutions and BatchNorms (none in a language model), and
  LRP's composites are CNN/MLP rules (a transformer needs AttnLRP's): both refused, naming what to use.
- MetaStep takes an SGD step on the cross-entropy of a class of a model called on the inputs
  directly; neither holds for a text target on the row-conditioned model. Refused.
"""

from __future__ import annotations

import dataclasses
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import RowConditioned, sample_sum
from ..engine.packing import references
from ..methods import LIME, LRP, Combine, FullGrad, IntegratedGradients, LayerMethod, MetaStep, Occlusion, SmoothGrad
from ..methods.attention import AttentionMethod
from ..methods.base import Method, broadcast_baseline
from .layout import Embedded

TOKEN_PERTURBATIONS = (Occlusion, LIME)          # KernelSHAP is a LIME
USE_INSTEAD = "IntegratedGradients, DeepLift or InputXGradient on the input embeddings"


def checked(method) -> Method:
    """``method`` (default ``IntegratedGradients(steps=32)``) if it explains tokens; otherwise a
    ValueError saying why not and what to use instead (see the module docstring)."""
    method = IntegratedGradients(steps=32) if method is None else method
    if not isinstance(method, Method):
        raise TypeError("method must be a gradaudit method such as ga.IntegratedGradients(), "
                        f"got {type(method).__name__}")
    name = type(method).__name__
    if isinstance(method, (LayerMethod, Combine)):
        raise ValueError(f"{name} is a layer method; layer methods map spatial feature maps [batch, channels, height, "
                         f"width] of a convolutional network, and a language model has none. For token attributions "
                         f"use {USE_INSTEAD} (InputXGradient is LinearApprox at the embedding layer); for a direction "
                         "in a layer's activations use text.grains")
    if isinstance(method, FullGrad):
        raise ValueError(f"FullGrad sums the bias-gradient maps of a convolutional network's convolutions and "
                         f"BatchNorms over their spatial feature maps, and a language model has none. For token "
                         f"attributions use {USE_INSTEAD}")
    if isinstance(method, LRP):
        raise ValueError("LRP's composites are rules for CNNs and MLPs (linear, convolution, BatchNorm and ReLU-like "
                         "layers); a transformer's LayerNorm, softmax attention and products need AttnLRP's rules: for "
                         "token attributions use ga.AttnLRP()")
    if isinstance(method, MetaStep):
        raise ValueError(f"MetaStep steps the weights on the cross-entropy of a class of a model called on its inputs "
                         f"directly, which a text target on token embeddings is not; for token attributions use the "
                         f"wrapped {type(method.method).__name__} alone, or {USE_INSTEAD}")
    if isinstance(method, AttentionMethod):
        return TokenAttention(method)
    if isinstance(method, SmoothGrad):
        if isinstance(method.method, AttentionMethod):
            raise ValueError(f"SmoothGrad averages input gradients under noise; {type(method.method).__name__} reads "
                             "attention matrices, so use it alone")
        if isinstance(method.method, TOKEN_PERTURBATIONS):
            raise ValueError(f"SmoothGrad adds Gaussian noise to the embedding coordinates around a gradient method; "
                             f"{type(method.method).__name__} removes whole tokens, so use it alone")
        checked(method.method)
    return method


def on_tokens(method: Method, length: int) -> Method:
    """A token perturbation method with its settings read in tokens on the [1, D, T, 1] image of
    a prompt of ``length`` = T tokens: Occlusion's int ``window``/``stride`` become (tokens, 1)
    windows; LIME's and KernelSHAP's features become the tokens (``feature_groups`` None: a
    patch of 1 x 1, one row of the image). Grouping tokens is refused: a group's coefficient spread
    over its tokens would count it once per token in their sum."""
    if isinstance(method, Occlusion):
        for setting in ("window", "stride"):
            value = getattr(method, setting)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ValueError(f"on text, Occlusion's {setting} counts tokens: give an int, got {value!r}")
        if method.window > length:
            raise ValueError(f"Occlusion window of {method.window} tokens is longer than the prompt ({length} "
                             f"tokens); give window <= {length}")
        return dataclasses.replace(method, window=(method.window, 1), stride=(method.stride, 1))
    if method.feature_groups is not None:
        raise ValueError(f"on text, {type(method).__name__}'s features are the prompt's tokens: leave "
                         f"feature_groups=None, got {type(method.feature_groups).__name__}")
    return dataclasses.replace(method, feature_groups=1)


def per_token(method: Method, embedded: Embedded, x: Tensor, lengths: list[int], scorer,
              batch_size: int | None = None) -> Tensor:
    """Token values [B, P] of a token perturbation method, one prompt at a time: example i's
    first ``lengths[i]`` embeddings of ``x`` [B, P, D] as the image [1, D, T, 1] (every coordinate
    of a token carries the token's value; positions past a prompt's end stay 0)."""
    values = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
    for i, length in enumerate(lengths):
        row = torch.tensor([i], device=x.device)
        image = x[i:i + 1, :length].transpose(1, 2).unsqueeze(-1)
        model = TokenGrid(embedded.select(row), x.shape[1])
        attr = on_tokens(method, length)(model, image, scorer.select(row), batch_size=batch_size)
        values[i, :length] = attr[0, 0, :, 0]
    return values


class TokenGrid(RowConditioned):
    """The embedded language model as a model of images [R, D, T, 1]: channels are the embedding
    coordinates, rows the T prompt tokens; the prompt is right-padded to the layout's ``width``
    (positions the model never reads)."""

    def __init__(self, embedded: RowConditioned, width: int):
        super().__init__()
        self.embedded, self.width = embedded, width
        self.training = embedded.training          # a new module starts in train mode; mirror the model's

    def forward(self, image: Tensor, rows: Tensor):
        x = image.squeeze(-1).transpose(1, 2)                                   # [R, T, D]
        return self.embedded(F.pad(x, (0, 0, 0, self.width - x.shape[1])), rows)


def own_references(method: Method, x: Tensor) -> Tensor:
    """The references [M, B, P, D] the method compares ``x`` with, whose mean score is the
    baseline score: its ``baseline`` (IntegratedGradients, DeepLift, LIME, KernelSHAP), its
    ``fill`` (Occlusion: every token removed), every row of its ``baselines`` (DeepLiftShap,
    GradientShap), the wrapped method's for SmoothGrad, else the zero embedding."""
    if isinstance(method, SmoothGrad):
        return own_references(method.method, x)
    if isinstance(method, Occlusion):
        return torch.full_like(x, method.fill)[None]
    fields = {f.name for f in dataclasses.fields(method)}
    if "baseline" in fields:
        return broadcast_baseline(method.baseline, x)[None]
    if "baselines" in fields:
        refs = references(method.baselines, x, "baselines")                  # [M, P, D]
        return refs[:, None].expand(-1, *x.shape)
    return torch.zeros_like(x)[None]


@dataclasses.dataclass(frozen=True)
class TokenAttention(Method):
    """An attention method (``AttentionRollout``, ``GradientRollout``) on the embedded language model:
    token scores [B, P, 1] from the explained position's row of its matrix (see the module docstring)."""

    method: AttentionMethod = None

    @property
    def needs_gradients(self) -> bool:
        return self.method.gradients

    def _explain(self, model, x, target, chunk):
        layout = model.layout
        sequence = int(layout.sequence_of[0])

        def rows(r, e, k):
            joint, causal = self.method.matrices(model, x[e], target, e)
            joint = joint.view(len(e), layout.sequences, *joint.shape[1:])[:, sequence]      # [R, L, L]
            examples = e.cpu()
            if self.method.position is not None:
                position = torch.full((len(e),), self.method.position)
            elif bool(layout.scored[examples, 0, 0].all()):
                position = layout.positions[examples, 0, 0]
            elif causal:
                position = layout.mask[examples, sequence].sum(-1) - 1
            else:
                position = torch.zeros(len(e), dtype=torch.long)
            if not bool(((position >= 0) & (position < joint.shape[-1])).all()):
                raise ValueError(f"position={self.method.position} is outside the {joint.shape[-1]} tokens of the "
                                 "sequences")
            values = joint[torch.arange(len(e), device=joint.device), position.to(joint.device), :x.shape[1]]
            prompt = torch.arange(x.shape[1]) < layout.prompt_lengths[examples][:, None]
            return (values * prompt.to(values.device), )

        return sample_sum(len(x), 1, chunk, rows, x.device)[0].to(x.dtype)[..., None]
