"""Okapi BM25 (k1 = 1.5, b = 0.75): the lexical prefilter Grosse et al. used to pick candidate sequences.

A document's score for a query is sum over the query's distinct words w of
idf(w) (tf (k1 + 1)) / (tf + k1 (1 - b + b |d| / avgdl)), idf(w) = ln(1 + (N - df + 0.5) / (df + 0.5))
(never negative), with words the lowercased runs of letters and digits. It only sees shared words:
a sequence that influences a completion without sharing its words is dropped, so a prefilter biases
influence towards lexical overlap (the paper says so too).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import torch
from torch import Tensor

K1, B = 1.5, 0.75


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def bm25(documents: list[str], queries: list[str], k1: float = K1, b: float = B) -> Tensor:
    """BM25 scores [Q, N] of every document for every query."""
    counts = [Counter(words(d)) for d in documents]
    lengths = [sum(c.values()) for c in counts]
    average = max(sum(lengths) / max(len(documents), 1), 1e-9)
    frequency = Counter(w for c in counts for w in c)
    n = len(documents)
    out = torch.zeros(len(queries), n, dtype=torch.float64)
    for q, query in enumerate(queries):
        for w in set(words(query)):
            idf = math.log(1 + (n - frequency[w] + 0.5) / (frequency[w] + 0.5))
            for d, (c, length) in enumerate(zip(counts, lengths, strict=True)):
                tf = c[w]
                if tf:
                    out[q, d] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average))
    return out


def candidates(documents: list[str], queries: list[str], k: int) -> Tensor:
    """The indices [Q, min(k, N)] of each query's top-k documents by BM25 (ties: the earlier document)."""
    scores = bm25(documents, queries)
    order = torch.sort(-scores, dim=1, stable=True).indices
    return order[:, :min(k, len(documents))]
