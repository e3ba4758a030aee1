"""GrAInS (Nguyen et al. 2025): steering vectors from contrastive token attributions.

1. Contrastive Integrated Gradients of log p(preferred) - log p(dispreferred) scores each
   prompt token; the top-k positive tokens T+ and top-k negative tokens T- are picked.
2. The hidden state h at ``layer`` (last prompt token) is read with T+ ablated and with T-
   ablated (replaced by a pad or mask token). Removing T- leaves what supports the preferred
   answer, removing T+ what supports the dispreferred one, so
   v = mean over prompts of h(x without T-) - h(x without T+)   ("mean"; "pca": the first
   principal component of those differences, signed like their mean).
3. At inference every token's hidden state at ``layer`` becomes h + alpha v, rescaled to the
   norm of h (norm-preserving, so the representation's scale is kept).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn

from ..engine import edited_output, observe, prepared, resolve_layer
from ..engine.checks import check_choice, check_positive_int
from ..methods import IntegratedGradients
from .explainer import TOKEN_BASELINES, TextExplainer
from .layout import Branch
from .targets import Contrast


@dataclass
class Steering:
    """A steering vector [D] for the output of ``layer``, and the tokens that built it."""

    layer: str
    vector: Tensor
    selected: list[dict] = field(default_factory=list)

    @contextmanager
    def applied(self, model: nn.Module, alpha: float):
        """Within the block, ``layer``'s output h becomes (h + alpha v) * |h| / |h + alpha v| per token."""
        _, module = resolve_layer(model, self.layer)

        def steer(h: Tensor) -> Tensor:
            steered = h + alpha * self.vector.to(h)
            return steered * (h.norm(dim=-1, keepdim=True) / steered.norm(dim=-1, keepdim=True).clamp_min(1e-12))

        with edited_output(module, steer):
            yield model

    def effect(self, tx: TextExplainer, prompts: list[str], preferred, dispreferred, alpha: float) -> pd.DataFrame:
        """Margin log p(preferred) - log p(dispreferred) per prompt without and with steering."""
        target = Contrast(preferred, dispreferred)
        before = tx.score(prompts, target)
        with self.applied(tx.model, alpha):
            after = tx.score(prompts, target)
        return pd.DataFrame({"prompt": prompts, "margin": before.tolist(), "steered": after.tolist(),
                             "change": (after - before).tolist()})


def _top(scores: Tensor, allowed: Tensor, k: int, sign: float) -> list[int]:
    """Positions of the ``k`` largest ``sign * scores`` that are positive and ``allowed``."""
    signed = torch.where(allowed, sign * scores, torch.full_like(scores, -torch.inf))
    order = signed.argsort(descending=True)[:k]
    return [int(i) for i in order if signed[i] > 0]


def grains(tx: TextExplainer, prompts: list[str], preferred, dispreferred, layer: str, k: int = 3, *,
           steps: int = 32, ablate: str = "pad", reduce: str = "mean") -> Steering:
    """Build a GrAInS steering vector for ``layer`` (dotted module name of a transformer block)
    from ``prompts`` and their ``preferred``/``dispreferred`` continuations (one string for all
    prompts or one per prompt). ``k``: tokens of each sign per prompt; ``ablate``: the token
    that replaces them ("pad", "mask", "unk"); ``reduce``: "mean" or "pca"."""
    check_positive_int("k", k)
    check_choice("ablate", ablate, tuple(TOKEN_BASELINES))
    check_choice("reduce", reduce, ("mean", "pca"))
    if isinstance(prompts, str):
        prompts = [prompts]
    name, module = resolve_layer(tx.model, layer)
    token = getattr(tx.tokenizer, TOKEN_BASELINES[ablate], None)
    if token is None:
        raise ValueError(f"ablate={ablate!r} but the tokenizer has no {ablate} token")
    found = tx.explain(list(prompts), Contrast(preferred, dispreferred), IntegratedGradients(steps=steps))
    special = set(getattr(tx.tokenizer, "all_special_ids", []))
    ablated, selected = [], []
    for r in found:
        allowed = torch.tensor([i not in special for i in r.ids])
        plus, minus = _top(r.scores, allowed, k, 1.0), _top(r.scores, allowed, k, -1.0)
        selected.append({"tokens": r.tokens, "positive": [r.tokens[i] for i in plus],
                         "negative": [r.tokens[i] for i in minus]})
        for drop in (minus, plus):
            ablated.append([int(token) if i in drop else t for i, t in enumerate(r.ids)])
    emb, x, _ = tx.inputs(ablated, [[Branch()]] * len(ablated))
    with prepared(tx.model):
        (hidden,) = observe(emb, x, torch.arange(len(x)), [(name, module)])
    if hidden.ndim != 3:
        raise ValueError(f"layer {name!r} outputs shape {list(hidden.shape)}; steering needs hidden states "
                         "[batch, tokens, features]: pick a transformer block")
    last = torch.tensor([len(a) - 1 for a in ablated], device=hidden.device)
    h = hidden[torch.arange(len(ablated), device=hidden.device), last].double()      # [2N, D]
    diffs = h[0::2] - h[1::2]                                                         # h(x \ T-) - h(x \ T+)
    vector = diffs.mean(0)
    if reduce == "pca" and len(diffs) > 1:
        component = torch.linalg.svd(diffs - diffs.mean(0), full_matrices=False).Vh[0]
        vector = component * torch.sign(component @ vector) * vector.norm()
    return Steering(name, vector.to(hidden.dtype), selected)
