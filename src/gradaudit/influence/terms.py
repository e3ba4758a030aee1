"""Preconditioned query gradients, kept whole or at low rank, and their dot products with training gradients.

A query's preconditioned gradient of one layer is a matrix P [out, in]. Grosse et al. keep it at rank r
(its top r singular triplets: left [out, r] with the singular values folded in, right [r, in]); the paper
finds Pearson 0.995 against full rank at r = 32. Dot products with a training example whose gradient is
sum over positions p of g_p a_p^T split by position: term_p = g_p^T P a_p (with P at rank r,
sum_k (g_p . left_k)(right_k . a_p)); these per-position (per-token) terms sum to the example's score.
A term belongs to the position of the layer's input, not to the token's own influence.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

Query = Tensor | tuple[Tensor, Tensor]


def check_rank(rank) -> None:
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1):
        raise ValueError(f"rank must be None (preconditioned query gradients kept whole) or an integer >= 1, "
                         f"got {rank!r}")


def low_rank(pre: Tensor, rank: int | None) -> Query:
    """``pre`` [Q, out, in] as (left [Q, out, r], right [Q, r, in]) at ``rank`` r, or whole (``rank`` None, or
    not below min(out, in))."""
    if rank is None or rank >= min(pre.shape[1:]):
        return pre
    u, s, vh = torch.linalg.svd(pre.double(), full_matrices=False)
    return (u[..., :rank] * s[:, None, :rank]).to(pre.dtype), vh[:, :rank].to(pre.dtype)


def dense(query: Query) -> Tensor:
    """The query gradients [Q, out, in] (a low-rank pair multiplied out)."""
    return query if isinstance(query, Tensor) else query[0] @ query[1]


def example_terms(query: Query, grads: Tensor) -> Tensor:
    """[Q, B]: the dot products of the queries with per-example gradients ``grads`` [B, out, in]."""
    return torch.einsum("qoi,boi->qb", dense(query).to(grads.dtype), grads)


def position_terms(query: Query, inputs: Tensor, outputs: Tensor) -> Tensor:
    """[Q, B, P]: each position's term g_p^T P a_p, from a layer's input rows ``inputs`` [B, P, in] and output
    gradient rows ``outputs`` [B, P, out]; summed over P they are ``example_terms``."""
    if isinstance(query, Tensor):
        return torch.einsum("qoi,bpi,bpo->qbp", query.to(inputs.dtype), inputs, outputs)
    left, right = (t.to(inputs.dtype) for t in query)
    return (torch.einsum("bpo,qor->qbpr", outputs, left) * torch.einsum("qri,bpi->qbpr", right, inputs)).sum(-1)
