"""ReAGent (Zhao & Shan 2024): recursive attribution by token replacement, model-agnostic.

``runs`` chains run side by side, each with its own logit-scale importance s [T]. One step:
replace a random ``ratio`` of the prompt tokens, measure d = p(y | x) - p(y | x replaced), and
add logit(1/2 + d/2) to s of the replaced tokens and logit(1/2 - d/2) to the others. A chain
stops once keeping only its ``keep`` most important tokens (the rest replaced) still puts the
target's first token among the ``top_k`` predictions. The result is softmax(s), averaged over
chains: importances on the simplex (they sum to 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..engine import predict, prepared
from ..engine.checks import check_positive_int
from .explainer import TextExplainer, TokenScores
from .layout import Branch
from .targets import ContinuationScore, InTopK


@dataclass(frozen=True)
class RandomReplacer:
    """Replacement tokens drawn uniformly from the vocabulary, never a special token."""

    vocab_size: int
    special: tuple[int, ...] = ()

    def __call__(self, ids: Tensor, replace: Tensor, generator: torch.Generator) -> Tensor:
        draws = torch.randint(self.vocab_size, ids.shape, generator=generator)
        if self.special:
            bad = torch.isin(draws, torch.tensor(self.special))
            while bad.any():
                draws[bad] = torch.randint(self.vocab_size, (int(bad.sum()),), generator=generator)
                bad = torch.isin(draws, torch.tensor(self.special))
        return torch.where(replace, draws, ids)


@dataclass(frozen=True)
class MaskedLMReplacer:
    """Replacement tokens sampled from a masked LM (sharing the explained model's vocabulary)
    at the replaced positions, as in the paper's RoBERTa replacer; the original token is excluded."""

    model: nn.Module
    mask_id: int

    @torch.no_grad()
    def __call__(self, ids: Tensor, replace: Tensor, generator: torch.Generator) -> Tensor:
        device = next(self.model.parameters()).device
        masked = torch.where(replace, torch.full_like(ids, self.mask_id), ids).to(device)
        with prepared(self.model):
            logits = self.model(input_ids=masked).logits.float().cpu()
        logits.scatter_(-1, ids[..., None], -torch.inf)
        probs = torch.softmax(logits, -1).flatten(0, 1)
        draws = torch.multinomial(probs, 1, generator=generator).view(ids.shape)
        return torch.where(replace, draws, ids)


def reagent(tx: TextExplainer, prompt: str, target: str, *, ratio: float = 0.3, keep: float = 0.3,
            top_k: int = 3, runs: int = 10, max_steps: int = 200, replacer=None, seed: int = 0) -> TokenScores:
    """ReAGent importance of each token of ``prompt`` for the continuation ``target``.

    ratio: share of tokens replaced per step; keep: share of most important tokens kept by the
    stopping test; top_k: the stopping test's rank; runs: chains averaged; max_steps: cap per
    chain; replacer: ``(ids [R, T], replace [R, T] bool, generator) -> ids`` (default
    ``RandomReplacer``; ``MaskedLMReplacer`` for a masked LM); seed: makes the result repeatable.
    Special tokens are never replaced. ``score`` is p(target | prompt); ``baseline_score`` and
    ``delta`` are not defined for ReAGent (nan).
    """
    if not 0 < ratio < 1 or not 0 < keep < 1:
        raise ValueError(f"ratio and keep must be in (0, 1), got ratio={ratio!r}, keep={keep!r}")
    for name, value in (("top_k", top_k), ("runs", runs), ("max_steps", max_steps)):
        check_positive_int(name, value)
    ids = tx.encode(prompt)
    cont = tx.continuation(target)
    special = tuple(int(i) for i in getattr(tx.tokenizer, "all_special_ids", []))
    replacer = replacer or RandomReplacer(len(tx.tokenizer), special)
    generator = torch.Generator().manual_seed(seed)
    base = torch.tensor(ids)
    free = ~torch.isin(base, torch.tensor(special, dtype=torch.long))               # [T]
    n_keep = max(1, int(round(keep * int(free.sum()))))

    def evaluate(batch: Tensor, scorer) -> Tensor:
        emb, x, _ = tx.inputs(batch.tolist(), [[Branch(cont)]] * len(batch))
        with prepared(tx.model):
            return predict(emb, x, scorer, len(x)).float().cpu()

    p_original = evaluate(base[None], ContinuationScore()).exp()[0]
    logits = torch.rand(runs, len(ids), generator=generator)
    active = torch.ones(runs, dtype=torch.bool)
    for _ in range(max_steps):
        replace = (torch.rand(runs, len(ids), generator=generator) < ratio) & free
        replaced = replacer(base.expand(runs, -1).clone(), replace, generator)
        p = evaluate(replaced, ContinuationScore()).exp()
        d = (p_original - p)[:, None]
        update = torch.logit((0.5 + 0.5 * torch.where(replace, d, -d)).clamp(1e-6, 1 - 1e-6))
        logits = torch.where(active[:, None], logits + update, logits)
        importance = torch.softmax(logits, -1)
        ranked = torch.where(free, importance, torch.full_like(importance, -1.0)).argsort(-1, descending=True)
        kept = torch.zeros_like(replace).scatter_(1, ranked[:, :n_keep], True)
        probe = replacer(base.expand(runs, -1).clone(), ~kept & free, generator)
        active &= evaluate(probe, InTopK(top_k)) < 0.5
        if not active.any():
            break
    scores = torch.softmax(logits, -1).mean(0)
    return TokenScores(tx.tokens(ids), scores, float(p_original), float("nan"), float("nan"), ids)
