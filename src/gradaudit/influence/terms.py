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
FACTORED_VALUES = 2**22            # values in each of a low-rank scoring pass's two products (16 MB in float32)


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


def joined(parts: list[Query]) -> Query:
    """One layer's queries of consecutive chunks as one: whole [Q, out, in] concatenated, or low-rank pairs factor by
    factor (``low_rank`` keeps a layer whole in every chunk or in none: the choice depends on its shape)."""
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def example_terms(query: Query, inputs: Tensor, outputs: Tensor) -> Tensor:
    """[Q, B]: the dot products of the queries with the per-example gradients sum_p g_p a_p^T, from a layer's input
    rows ``inputs`` [B, P, in] and output gradient rows ``outputs`` [B, P, out]. Whole queries: the per-example
    gradients [B, out, in], then one matrix product (flattened: much faster than the same einsum on CPU). A low-rank
    pair stays factored, sum_p sum_k (g_p . left_k)(right_k . a_p): two products [B x P, Q x r], never the queries'
    [Q, out, in] nor the examples' [B, out, in]; queries taken FACTORED_VALUES / (B x P x r) at a time."""
    if isinstance(query, Tensor):
        grads = torch.einsum("bpo,bpi->boi", outputs, inputs)
        return query.flatten(1).to(grads.dtype) @ grads.flatten(1).T
    left, right = (t.to(inputs.dtype) for t in query)
    (count, width, rank), (examples, positions) = left.shape, inputs.shape[:2]
    rows_out, rows_in = outputs.reshape(examples * positions, -1), inputs.reshape(examples * positions, -1)
    out = inputs.new_empty(count, examples)
    step = max(1, FACTORED_VALUES // (examples * positions * rank))
    for start in range(0, count, step):
        part = slice(start, start + step)
        u = rows_out @ left[part].permute(1, 0, 2).reshape(width, -1)                     # [B x P, q x r]
        v = rows_in @ right[part].permute(2, 0, 1).reshape(right.shape[2], -1)           # [B x P, q x r]
        out[part] = (u * v).view(examples, positions, -1, rank).sum((1, 3)).T
    return out


def position_terms(query: Query, inputs: Tensor, outputs: Tensor) -> Tensor:
    """[Q, B, P]: each position's term g_p^T P a_p, from a layer's input rows ``inputs`` [B, P, in] and output
    gradient rows ``outputs`` [B, P, out]; summed over P they are ``example_terms``."""
    if isinstance(query, Tensor):
        return torch.einsum("qoi,bpi,bpo->qbp", query.to(inputs.dtype), inputs, outputs)
    left, right = (t.to(inputs.dtype) for t in query)
    return (torch.einsum("bpo,qor->qbpr", outputs, left) * torch.einsum("qri,bpi->qbpr", right, inputs)).sum(-1)
