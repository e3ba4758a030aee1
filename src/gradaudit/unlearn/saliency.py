"""Weight saliency (SalUn, Fan et al. ICLR 2024): which weights carry the data to forget.

The saliency of a weight is |d loss_forget / d weight| at the trained weights, where
loss_forget is the mean cross-entropy over the forget set (the paper's gradient-ascent
forgetting loss is its negative; the absolute value is the same). The mask keeps the
``threshold`` share of weights with the *largest* saliency, as the paper defines it
(m = 1[|g| >= gamma]). The authors' mask script (``Classification/generate_mask.py``) ranks
|g| with an ascending argsort and keeps ranks below ``share x n``, i.e. the *smallest* |g|:
at their default 0.5 its "hard" mask is our anti-salient mask (``complement()``); see docs/unlearning.md.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.inputs import as_examples
from ..engine.checks import check_choice, check_model, check_positive_int

SCOPES = ("global", "layer")


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """{name: parameter} of the parameters that require gradients; an error when there are none."""
    check_model(model)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable weights (no parameter requires grad); unlearning updates weights")
    return params


def check_threshold(threshold) -> float:
    """``threshold`` as a float in (0, 1]; a ValueError naming it otherwise."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a share of weights in (0, 1]; got {threshold!r}")
    return float(threshold)


class WeightMasks(dict):
    """{parameter name: bool tensor of its shape}: True where a weight may change.

    ``scores`` keeps the saliency |g| per parameter (the same shapes); ``summary()`` gives the
    share of salient weights per parameter tensor; ``complement()`` and ``random_like(seed)``
    are the two controls of the audit (anti-salient, and random of the same overall share).
    """

    def __init__(self, masks: dict[str, Tensor], scores: dict[str, Tensor] | None = None, kind: str = "salient"):
        super().__init__(masks)
        self.scores = scores or {}
        self.kind = kind

    @property
    def share(self) -> float:
        """Share of all masked weights that are True."""
        total = sum(m.numel() for m in self.values())
        return sum(int(m.sum()) for m in self.values()) / max(total, 1)

    def summary(self) -> list[dict]:
        """One row per parameter tensor: ``parameter``, ``weights`` (its size), ``salient_share``."""
        return [{"parameter": name, "weights": m.numel(), "salient_share": int(m.sum()) / m.numel()}
                for name, m in self.items()]

    def complement(self) -> WeightMasks:
        """The anti-salient control: every weight the mask leaves out, and only those."""
        return WeightMasks({name: ~m for name, m in self.items()}, self.scores, "anti-salient")

    def random_like(self, seed: int = 0) -> WeightMasks:
        """The random control: the same number of True weights overall, placed uniformly at random over
        all masked weights (seeded; the per-layer shares then follow the layers' sizes)."""
        sizes = [m.numel() for m in self.values()]
        chosen = int(sum(int(m.sum()) for m in self.values()))
        generator = torch.Generator().manual_seed(seed)
        flat = torch.zeros(sum(sizes), dtype=torch.bool)
        flat[torch.randperm(len(flat), generator=generator)[:chosen]] = True
        parts = flat.split(sizes)
        return WeightMasks({name: part.view_as(m) for (name, m), part in zip(self.items(), parts, strict=True)},
                           self.scores, "random")


def gradient_magnitudes(model: nn.Module, forget, batch_size: int = 256) -> dict[str, Tensor]:
    """|gradient of the mean cross-entropy over ``forget``| per trainable parameter, at the model's
    weights, in eval mode (BatchNorm running statistics, no dropout; as the authors' script).
    Memory: one accumulator per parameter; ``.grad``, modes and weights are left as found."""
    params = trainable(model)
    examples = as_examples(forget, "forget")
    if len(examples) == 0:
        raise ValueError("forget is empty; weight saliency needs at least one example to forget")
    check_positive_int("batch_size", batch_size)
    modes = [(module, module.training) for module in model.modules()]
    totals = {name: torch.zeros_like(p) for name, p in params.items()}
    try:
        model.eval()
        for start in range(0, len(examples), batch_size):
            x, y = examples.x[start:start + batch_size], examples.y[start:start + batch_size]
            loss = F.cross_entropy(model(x), y, reduction="sum") / len(examples)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, _), grad in zip(params.items(), grads, strict=True):
                if grad is not None:
                    totals[name] += grad.detach()
    finally:
        for module, training in modes:
            module.training = training
    return {name: total.abs() for name, total in totals.items()}


def top_share(scores: Tensor, threshold: float) -> Tensor:
    """Bool mask of ``scores``' shape keeping its ``round(threshold x n)`` largest values (Python's round,
    halves to even; at least one);
    ties broken by position (the earlier flat index first), so the mask is deterministic."""
    flat = scores.flatten()
    count = max(1, round(threshold * flat.numel()))
    order = torch.argsort(flat, descending=True, stable=True)
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[:count]] = True
    return mask.view(scores.shape)


def weight_saliency(model: nn.Module, forget, threshold: float = 0.5, scope: str = "global",
                    batch_size: int = 256) -> WeightMasks:
    """SalUn's weight-saliency masks of ``model`` for the data in ``forget``.

    model: a trained classifier (left exactly as found).
    forget: the examples to forget, any dataset ``train.fit`` accepts (x [N, ...], labels [N]).
    threshold: share of weights kept, in (0, 1]; 0.5 is the paper's default.
    scope: "global" ranks all trainable weights together (as the authors' script does), "layer"
        keeps the top ``threshold`` share of each parameter tensor.
    Returns ``WeightMasks``: {parameter name: bool tensor}, True = salient (may change).
    """
    threshold = check_threshold(threshold)
    check_choice("scope", scope, SCOPES)
    scores = gradient_magnitudes(model, forget, batch_size)
    if scope == "layer":
        return WeightMasks({name: top_share(s, threshold) for name, s in scores.items()}, scores)
    flat = top_share(torch.cat([s.flatten() for s in scores.values()]), threshold)
    parts = flat.split([s.numel() for s in scores.values()])
    return WeightMasks({name: part.view(s.shape) for (name, s), part in zip(scores.items(), parts, strict=True)},
                       scores)
