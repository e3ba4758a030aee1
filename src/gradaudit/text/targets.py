"""What a text explanation scores: a continuation's log-probability, a class logit, or any
callable on the model output; and ``Contrast`` for "why this rather than that"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import Target
from .layout import TextForward


@dataclass(frozen=True)
class Contrast:
    """Score of ``preferred`` minus score of ``dispreferred``: two continuations (strings: log p(a)
    - log p(b), teacher-forced) or two classes (ints, for classifiers: logit a - logit b)."""

    preferred: object
    dispreferred: object


def _output_logits(fwd: TextForward, ndim: int, what: str) -> Tensor:
    logits = getattr(fwd.output, "logits", None)
    if not isinstance(logits, Tensor) or logits.ndim != ndim:
        shape = list(logits.shape) if isinstance(logits, Tensor) else "no logits"
        expected = "[batch, tokens, vocab]" if ndim == 3 else "[batch, classes]"
        raise ValueError(
            f"{what} needs a model whose output has logits {expected}, but this model gives {shape}; "
            "for an embedder pass a callable target (output -> Tensor[batch])"
        )
    return logits


class ContinuationScore(Target):
    """Signed sum over branches of the log-probability of each branch's scored tokens."""

    def scores(self, fwd: TextForward, rows):
        lay = fwd.layout
        logits = _output_logits(fwd, 3, "a continuation target")
        logits = logits.view(len(fwd.rows), lay.sequences, *logits.shape[1:])        # [R, S, L, V]
        device = logits.device
        r = torch.arange(len(fwd.rows), device=device)[:, None, None]
        positions = lay.positions.to(device)[fwd.rows]                                # [R, K, M]
        picked = logits[r, lay.sequence_of.to(device)[None, :, None], positions]      # [R, K, M, V]
        logp = torch.log_softmax(picked, dim=-1).gather(-1, lay.scored_ids.to(device)[fwd.rows][..., None])[..., 0]
        per_branch = (logp * lay.scored.to(device, logp.dtype)[fwd.rows]).sum(-1)      # [R, K]
        return (per_branch * lay.signs.to(device, logp.dtype)).sum(-1)


class InTopK(Target):
    """1.0 where the first scored token of branch 0 is among the ``k`` most likely next tokens."""

    def __init__(self, k: int):
        self.k = k

    def scores(self, fwd: TextForward, rows):
        lay = fwd.layout
        logits = _output_logits(fwd, 3, "a continuation target")
        logits = logits.view(len(fwd.rows), lay.sequences, *logits.shape[1:])[:, lay.sequence_of[0]]
        r = torch.arange(len(fwd.rows), device=logits.device)
        step = logits[r, lay.positions.to(logits.device)[fwd.rows, 0, 0]]             # [R, V]
        wanted = lay.scored_ids.to(logits.device)[fwd.rows, 0, 0]
        return (step.topk(self.k, dim=-1).indices == wanted[:, None]).any(-1).to(logits.dtype)


class ClassScore(Target):
    """An engine class target (``Classes``, ``Contrast``) applied to a classifier's logits."""

    def __init__(self, inner: Target):
        self.inner = inner

    def scores(self, fwd: TextForward, rows):
        return self.inner.scores(_output_logits(fwd, 2, "a class target"), rows)

    def select(self, rows):
        """The inner target's classes follow the rows (SmoothGrad runs its inner method on row subsets)."""
        return ClassScore(self.inner.select(rows))


class OutputFunction(Target):
    """A user callable on the model output (with ``output.attention_mask`` set) -> Tensor[R]."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def scores(self, fwd: TextForward, rows):
        scores = self.fn(fwd.output)
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (len(rows),):
            shape = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"target callable returned {shape}; expected one score per example, shape [{len(rows)}]")
        return scores


def mean_pooled(output) -> Tensor:
    """Sentence embeddings [R, D]: the mean of ``last_hidden_state`` over real (unpadded) tokens,
    the pooling of sentence-transformers models such as all-MiniLM-L6-v2."""
    hidden = output.last_hidden_state
    mask = output.attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@dataclass(frozen=True)
class SimilarTo:
    """The target of an embedder: cosine similarity of the prompt's sentence embedding (``mean_pooled``)
    to ``reference`` [D] (e.g. ``TextExplainer.embedding(text)``), a callable ``output -> Tensor[R]``."""

    reference: Tensor

    def __call__(self, output) -> Tensor:
        embedded = mean_pooled(output)
        return F.cosine_similarity(embedded, self.reference.to(embedded)[None], dim=1)
