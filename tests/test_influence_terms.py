"""Dot products of preconditioned query gradients with training gradients (``influence.terms``): the low-rank
pair kept factored equals the same pair multiplied out, query block by query block; whole queries equal the
einsum over per-example gradients; ``scores(rank=r)`` equals scores from the rank-r matrices written out."""

import torch

from gradaudit import influence
from gradaudit.influence import fitted, terms


def _rows(seed, b=5, p=3, o=7, i=6, q=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(q, o, i, generator=g, dtype=torch.float64), torch.randn(b, p, i, generator=g,
            dtype=torch.float64), torch.randn(b, p, o, generator=g, dtype=torch.float64))


def test_factored_terms_equal_the_multiplied_out_query(monkeypatch):
    query, inputs, outputs = _rows(0)
    grads = torch.einsum("bpo,bpi->boi", outputs, inputs)
    expected = torch.einsum("qoi,boi->qb", query, grads)
    assert torch.allclose(terms.example_terms(query, inputs, outputs), expected, rtol=1e-12, atol=1e-12)
    left, right = terms.low_rank(query, 3)
    expected = torch.einsum("qoi,boi->qb", left @ right, grads)
    assert torch.allclose(terms.example_terms((left, right), inputs, outputs), expected, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(terms, "FACTORED_VALUES", 1)          # one query per block
    assert torch.allclose(terms.example_terms((left, right), inputs, outputs), expected, rtol=1e-12, atol=1e-12)
    # the per-position terms of the same pair sum to it
    assert torch.allclose(terms.position_terms((left, right), inputs, outputs).sum(-1), expected, rtol=1e-12)


def test_low_rank_scores_equal_the_rank_r_matrices_written_out(monkeypatch):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5)).double().eval()
    g = torch.Generator().manual_seed(1)
    train = (torch.randn(20, 6, generator=g, dtype=torch.float64), torch.randint(0, 5, (20,), generator=g))
    queries = (train[0][:3], train[1][:3])
    f = influence.fit(net, train, strategy="ekfac")
    factored = f.scores(queries, train, rank=2)
    original = terms.low_rank

    def written(pre, rank):
        found = original(pre, rank)
        return found if isinstance(found, torch.Tensor) else found[0] @ found[1]

    monkeypatch.setattr(fitted, "low_rank", written)
    written_out = f.scores(queries, train, rank=2)
    assert torch.allclose(factored, written_out, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(factored, f.scores(queries, train), rtol=1e-3)
