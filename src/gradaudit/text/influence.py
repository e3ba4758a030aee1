"""``text.influence``: which training sequences make a language model complete a prompt as it does
(Grosse et al. 2023), and which of their tokens carry it.

The measurement is f = log p(completion | prompt), teacher-forced as ``TextExplainer`` scores a
continuation; each training sequence's loss is its next-token cross-entropy summed over tokens.
A sequence's score is -grad f^T (G + lambda)^-1 grad L(z): positive when the sequence makes the
completion more likely (``influence.fit`` with ``sequences.TokenLoss``: EK-FAC factors with tokens
treated as independent, eigenvalues refitted from per-sequence gradients). Only the MLP weights are
tracked by default, as in the paper. Sequences are right-padded into one batch (causal attention:
no real token sees the padding).
"""

from __future__ import annotations

import html
import numbers
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..engine.checks import check_choice
from ..influence import Influence
from ..influence import fit as fit_influence
from ..influence.layers import trackable
from ..influence.sequences import IGNORE, TokenLoss, log_probability
from .bm25 import candidates
from .render import token_html

STRATEGIES = ("identity", "diagonal", "kfac", "ekfac")
BY = (None, "token", "layer")
MLP_PARTS = ("mlp", "feed_forward", "ffn")


@dataclass
class SequenceInfluence:
    """What ``text.influence`` returns (one query: [N] where a list of queries gives [Q, N]).

    scores: influence of each training sequence on log p(completion | prompt), positive = makes it more
        likely; NaN for sequences the prefilter left out for that query.
    tokens: each training sequence's tokens. token_scores (``by="token"``): per sequence, each token's
        term ([T_n] or [Q, T_n]), summing to its score. layer_scores (``by="layer"``): {layer: scores}.
    candidates: with ``prefilter=K``, each query's K candidates [Q, K] (BM25 order), else None.
    fit: the fitted factors, to pass as ``factors=`` for other queries.
    """

    texts: list[str]
    tokens: list[list[str]]
    queries: list[tuple[str, str]]
    scores: Tensor
    token_scores: list[Tensor] | None
    layer_scores: dict[str, Tensor] | None
    candidates: Tensor | None
    fit: Influence

    def top(self, k: int = 10, query: int = 0) -> list[tuple[int, float]]:
        """The ``k`` sequences with the largest scores for query ``query``, as (index, score)."""
        row = self.scores if self.scores.ndim == 1 else self.scores[query]
        row = torch.where(torch.isnan(row), torch.full_like(row, -torch.inf), row)
        order = torch.sort(-row, stable=True).indices[:k]
        return [(int(i), float(row[i])) for i in order if torch.isfinite(row[i])]

    def html(self, k: int = 10, query: int = 0) -> str:
        """The top ``k`` sequences for query ``query``, their tokens coloured by their terms (``by="token"``)
        or plain; every string escaped."""
        rows = []
        for i, score in self.top(k, query):
            if self.token_scores is None:
                body = html.escape(" ".join(self.tokens[i]))
            else:
                terms = self.token_scores[i] if self.token_scores[i].ndim == 1 else self.token_scores[i][query]
                body = token_html(self.tokens[i], terms)
            rows.append(f"<tr><td>{i}</td><td>{score:.4g}</td><td>{body}</td></tr>")
        return ("<table class='gradaudit-influence'><tr><th>sequence</th><th>score</th><th>tokens</th></tr>"
                + "".join(rows) + "</table>")


def mlp_layers(model: nn.Module) -> list[str]:
    """The MLP weights: every Linear or Conv1D inside a module named mlp, feed_forward or ffn (GPT-2's
    c_fc and c_proj, Llama's gate_proj, up_proj and down_proj)."""
    return [name for name, module in model.named_modules()
            if trackable(module) and any(part in MLP_PARTS for part in name.split(".")[:-1])]


def resolve_layers(model: nn.Module, layers) -> list[str]:
    """``layers`` as dotted names: "mlp", a regular expression matched (``re.search``) against the names of
    the trackable layers, or a list of names; a ValueError when nothing matches."""
    names = [name for name, module in model.named_modules() if trackable(module)]
    if isinstance(layers, str):
        found = mlp_layers(model) if layers == "mlp" else [n for n in names if re.search(layers, n)]
        if not found:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ValueError(f"layers={layers!r} matches no Linear or Conv1D layer of the model; its layers are: "
                             f"{shown or 'none'}")
        return found
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(n, str) for n in layers):
        return list(layers)
    raise ValueError(f"layers must be 'mlp', a regular expression or a non-empty list of layer names; got {layers!r}")


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _limit(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _batch(sequences: list[list[int]], scored_from: list[int], pad: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids [B, L] and labels [B, L] (IGNORE before ``scored_from`` and on padding)."""
    width = max(len(s) for s in sequences)
    x = torch.full((len(sequences), width), pad, dtype=torch.long)
    y = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    for i, (s, first) in enumerate(zip(sequences, scored_from, strict=True)):
        x[i, :len(s)] = torch.tensor(s)
        y[i, first:len(s)] = torch.tensor(s[first:])
    return x, y


def _queries(prompt, completion) -> tuple[list[tuple[str, str]], bool]:
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    if isinstance(completion, str):
        completions = [completion] * len(prompts)
    elif isinstance(completion, (list, tuple)) and len(completion) == len(prompts) \
            and all(isinstance(c, str) for c in completion):
        completions = list(completion)
    else:
        raise ValueError(f"completion must be a string or a list of strings, one per prompt ({len(prompts)}); "
                         f"got {completion!r}")
    return list(zip(prompts, completions, strict=True)), single


def _check(train_texts, prefilter) -> list[str]:
    if isinstance(train_texts, str) or not isinstance(train_texts, (list, tuple)):
        raise ValueError(f"train_texts must be a list of strings (the training sequences), got "
                         f"{type(train_texts).__name__}")
    if not train_texts:
        raise ValueError("train_texts is empty; give at least one training sequence")
    bad = [i for i, t in enumerate(train_texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"train_texts[{bad[0]}] is a {type(train_texts[bad[0]]).__name__}; expected strings")
    if prefilter is not None and (isinstance(prefilter, bool) or not isinstance(prefilter, numbers.Integral)
                                  or prefilter < 1):
        raise ValueError(f"prefilter must be None or an integer >= 1 (candidates kept per query), got {prefilter!r}")
    return list(train_texts)


def _factors(factors, model: nn.Module) -> Influence:
    found = factors.fit if isinstance(factors, SequenceInfluence) else factors
    if not isinstance(found, Influence) or not isinstance(found.loss, TokenLoss):
        raise ValueError("factors must be what text.influence returned (or its .fit), fitted on token sequences; "
                         f"got {type(factors).__name__}")
    if found.model is not model:
        raise ValueError("factors were fitted on another model object; pass the model they were fitted on (or "
                         "influence.load(folder, model, loss=TokenLoss()))")
    return found


def influence(model: nn.Module, tokenizer, train_texts, prompt, completion, strategy: str = "ekfac",
              layers="mlp", by: str | None = None, rank: int | None = 32, factors=None, prefilter: int | None = None,
              *, damping: float | None = None, add_special_tokens: bool = False, batch_size: int | None = None,
              seed: int = 0) -> SequenceInfluence:
    """Influence of each training sequence on log p(completion | prompt) (Grosse et al. 2023).

    model, tokenizer: a Hugging Face causal LM (left exactly as found) and its tokenizer.
    train_texts: the training sequences (strings); the factors are fitted on them unless ``factors`` is given.
    prompt, completion: a string each, or lists (one completion per prompt, or one for all): a batch of
        queries sharing one fit.
    strategy: "ekfac" (the paper), "kfac", "diagonal" or "identity" (plain gradient dot products).
    layers: "mlp" (the MLP weights only, as the paper: GPT-2's mlp.c_fc and mlp.c_proj; Llama's
        gate/up/down_proj), a regular expression over layer names, or a list of names.
    by: None; "token" adds each training token's term (they sum to the sequence's score; a term is what
        the weights' gradient terms at that token contribute, not the token's own influence); "layer"
        each layer's scores.
    rank: the preconditioned query gradients kept at this rank per layer (32, the paper's); None keeps them.
    factors: a previous result (or its ``.fit``): its fit is reused, ``strategy``, ``layers``, ``damping``
        and ``seed`` are then its own.
    prefilter: K keeps each query's top K sequences by BM25 (k1 = 1.5, b = 0.75) and scores only those
        (others NaN). It biases the result towards sequences sharing the query's words.
    damping, batch_size, seed: as ``influence.fit`` (seed draws the true Fisher's labels).
    add_special_tokens: let the tokenizer add its special tokens to the training texts and prompts
        (BOS); leave False for a tokenizer that appends one (BERT's [SEP]).
    """
    texts = _check(train_texts, prefilter)
    queries, single = _queries(prompt, completion)
    check_choice("by", by, BY)
    check_choice("strategy", strategy, STRATEGIES)
    pad = next((int(v) for v in (getattr(tokenizer, n, None) for n in ("pad_token_id", "eos_token_id"))
                if v is not None), 0)
    limit = _limit(model)
    train_ids = []
    for i, t in enumerate(texts):
        ids = _ids(tokenizer, t, add_special_tokens)
        if len(ids) < 2:
            raise ValueError(f"train_texts[{i}] ({t!r}) has {len(ids)} token(s); a sequence needs at least two "
                             "(its first token is never predicted)")
        if limit is not None and len(ids) > limit:
            raise ValueError(f"train_texts[{i}] has {len(ids)} tokens, more than the model's {limit} positions")
        train_ids.append(ids)
    query_ids, firsts = [], []
    for p, c in queries:
        head, tail = _ids(tokenizer, p, add_special_tokens), _ids(tokenizer, c, False)
        if not head:
            raise ValueError(f"prompt {p!r} has no tokens; give at least one")
        if not tail:
            raise ValueError(f"completion {c!r} tokenises to no tokens; give a non-empty completion")
        query_ids.append(head + tail)
        firsts.append(len(head))
    if factors is None:
        fitted = fit_influence(model, _batch(train_ids, [0] * len(train_ids), pad), strategy=strategy,
                               damping=damping, layers=resolve_layers(model, layers), loss=TokenLoss(),
                               batch_size=batch_size, seed=seed)
    else:
        fitted = _factors(factors, model)
    keep = None if prefilter is None else candidates(texts, [p + c for p, c in queries], int(prefilter))
    scored = list(range(len(texts))) if keep is None else sorted(set(keep.flatten().tolist()))
    train = _batch([train_ids[i] for i in scored], [0] * len(scored), pad)
    query = _batch(query_ids, firsts, pad)
    token_scores, layer_scores = None, None
    if by == "token":
        terms = fitted.token_scores(query, train, measurement=log_probability, rank=rank)
        part = terms.sum(-1)
        token_scores = [terms[:, j, :len(train_ids[i])] for j, i in enumerate(scored)]
    elif by == "layer":
        layer_scores = fitted.scores(query, train, by="layer", measurement=log_probability, rank=rank)
        part = sum(layer_scores.values())
    else:
        part = fitted.scores(query, train, measurement=log_probability, rank=rank)
    allowed = torch.zeros(len(queries), len(texts), dtype=torch.bool)
    if keep is None:
        allowed[:] = True
    else:
        allowed.scatter_(1, keep, True)
    scores = _spread(part, scored, allowed)
    if layer_scores is not None:
        layer_scores = {name: _spread(v, scored, allowed) for name, v in layer_scores.items()}
    token_scores = _token_table(token_scores, scored, allowed, train_ids)
    if single:
        scores = scores[0]
        layer_scores = None if layer_scores is None else {k: v[0] for k, v in layer_scores.items()}
        token_scores = None if token_scores is None else [t[0] for t in token_scores]
    tokens = [list(tokenizer.convert_ids_to_tokens(ids)) for ids in train_ids]
    return SequenceInfluence(texts, tokens, queries, scores, token_scores, layer_scores, keep, fitted)


def _spread(part: Tensor, scored: list[int], allowed: Tensor) -> Tensor:
    """Scores [Q, N] from those of the ``scored`` sequences [Q, len(scored)]; NaN where not ``allowed``."""
    out = torch.full(allowed.shape, torch.nan, dtype=part.dtype)
    out[:, scored] = part.detach().cpu()
    return out.masked_fill(~allowed.to(out.device), torch.nan)


def _token_table(terms, scored: list[int], allowed: Tensor, train_ids: list[list[int]]) -> list[Tensor] | None:
    """Per training sequence its token terms [Q, T_n] (NaN where the sequence was not scored for a query)."""
    if terms is None:
        return None
    out = [torch.full((allowed.shape[0], len(ids)), torch.nan, dtype=terms[0].dtype) for ids in train_ids]
    for j, i in enumerate(scored):
        out[i] = terms[j].detach().cpu().masked_fill(~allowed[:, i, None], torch.nan)
    return out
