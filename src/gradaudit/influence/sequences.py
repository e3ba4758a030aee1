"""Token sequences: the language-model loss summed over tokens, its true Fisher, and the rows K-FAC counts.

A sequence is given as inputs ``x`` [B, T] (token ids, right-padded: with causal attention no real
token sees the padding) and labels ``y`` [B, T]: the token ids where a token is scored, ``IGNORE``
elsewhere (padding; for a query, the prompt). Position t's logits predict token t + 1 (teacher
forcing), so a sequence's loss is - sum over t >= 1 with y_t != IGNORE of log p(y_t | tokens < t).
``TokenLoss`` is a loss as ``influence.fit`` takes it, with two more duties:
- ``positions(y)`` [B, T]: the rows of the K-FAC factors (tokens treated as independent, padding
  left out), as Grosse et al. and kronfluence count them;
- ``fisher_loss``: the pseudo-loss of the true Fisher, the same sum at labels drawn per token from
  the model's own softmax (seeded per training example and position, so any chunking draws the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100


def token_logits(output) -> Tensor:
    """Next-token logits [B, T, V] from a model's output (a tensor, or an object with ``.logits``)."""
    found = output if isinstance(output, Tensor) else getattr(output, "logits", None)
    if not isinstance(found, Tensor) or found.ndim != 3:
        shape = list(found.shape) if isinstance(found, Tensor) else type(output).__name__
        raise ValueError(f"model output is {shape}; a token loss needs next-token logits [batch, tokens, vocabulary] "
                         "(a causal language model)")
    return found


def _check_labels(logits: Tensor, y: Tensor) -> None:
    if tuple(y.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"token labels have shape {list(y.shape)}; expected one per input token, "
                         f"{list(logits.shape[:2])}")


def log_probability(output, y: Tensor) -> Tensor:
    """sum over t >= 1 with y_t != IGNORE of log p(y_t | tokens < t), per sequence: Tensor[B]. With ``y``
    holding only a completion's tokens, log p(completion | prompt) teacher-forced."""
    logits = token_logits(output)
    _check_labels(logits, y)
    target = y[:, 1:]
    scored = target != IGNORE
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * scored).sum(1)


class TokenLoss:
    """Next-token cross-entropy summed over a sequence's scored tokens (not averaged): Tensor[B]."""

    def __call__(self, output, y: Tensor) -> Tensor:
        return -log_probability(output, y)

    def positions(self, y: Tensor) -> Tensor:
        """Bool [B, T]: the real tokens, each a row of the K-FAC factors."""
        return y != IGNORE

    def fisher_loss(self, output, y: Tensor, draws, rows: slice) -> Tensor:
        """The loss at labels drawn from the model's softmax at every scored position, Tensor[B]."""
        logits = token_logits(output)
        _check_labels(logits, y)
        scored = y[:, 1:] != IGNORE
        sampled = draws.token_labels(logits[:, :-1], rows)
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1), sampled.flatten(), reduction="none")
        return (losses.view_as(sampled) * scored).sum(1)
