"""TRAK (``influence.fit(..., strategy="trak")``) and ensembles: without projection against the formula built
with autograd one example at a time, with a projection against traker 0.3.2 (its own TRAKer on CPU, given our
projection matrix), a wide projection against none, the seed, the refusals, save/load, the model left as found;
ensembles of the other strategies against the mean of their members."""

import copy
import logging

import pytest
import torch
from helpers import assert_close_rel, assert_unchanged, snapshot
from nets import labelled_vectors, tanh_mlp
from torch import nn
from trak import TRAKer
from trak.projectors import AbstractProjector

from gradaudit import influence
from gradaudit.influence import trak


def _margin_features(model, x, y):
    """X [N, D] (margin gradients over all parameters, one autograd call per example) and Q [N] = 1 - p_y."""
    rows, q = [], []
    for xi, yi in zip(x, y, strict=True):
        z = model(xi[None])[0]
        p = torch.softmax(z, 0)[yi]
        margin = torch.log(p) - torch.log1p(-p)
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(margin, list(model.parameters()))]))
        q.append(1 - p.detach())
    return torch.stack(rows), torch.stack(q)


def _formula(models, train, queries, damping):
    """The paper's estimator: mean over models of phi(q)^T (X^T X + lambda I)^-1 X^T, times the mean Q."""
    kernel, weight = 0, 0
    for model in models:
        x, q = _margin_features(model, *train)
        phi, _ = _margin_features(model, *queries)
        k = x.T @ x + damping * torch.eye(x.shape[1], dtype=x.dtype)
        kernel = kernel + phi @ torch.linalg.solve(k, x.T)
        weight = weight + q
    return kernel / len(models) * (weight / len(models))[None]


@pytest.mark.parametrize("count", [1, 3])
def test_without_projection_equals_the_formula_by_autograd(count):
    models = [tanh_mlp(seed) for seed in range(count)]
    train, queries = labelled_vectors(30, 1), labelled_vectors(4, 2)
    f = influence.fit(models if count > 1 else models[0], train, strategy="trak", projection=None, damping=0.5)
    assert_close_rel(f.scores(queries, train), _formula(models, train, queries, 0.5), rel=1e-9)
    assert_close_rel(f.self_scores(train), _formula(models, train, train, 0.5).diagonal(), rel=1e-9)
    # damping=None: a thousandth of the mean eigenvalue of X^T X, per model
    f = influence.fit(models, train, strategy="trak", projection=None, batch_size=7)
    for m, model in enumerate(models):
        x, _ = _margin_features(model, *train)
        assert f.damping[f"model {m}"] == pytest.approx(1e-3 * float((x.T @ x).trace()) / x.shape[1], rel=1e-12)
    # a positive score raises the query's margin: an example is its own strongest proponent here
    assert (f.self_scores(train) > 0).all()


def _flat_layers(grads: dict, layers) -> torch.Tensor:
    """traker's per-example gradients {name: [B, ...]} laid out as ours: per layer [out, in + 1] (bias last)."""
    parts = []
    for name in layers:
        weight, bias = grads[f"{name}.weight"], grads[f"{name}.bias"]
        parts.append(torch.cat([weight.flatten(2), bias[..., None]], dim=2).flatten(1))
    return torch.cat(parts, dim=1)


class _OurProjection(AbstractProjector):
    """traker's projector interface around our projection matrices, one per model id."""

    def __init__(self, matrices, layers):
        super().__init__(matrices[0].shape[0], matrices[0].shape[1], 0, "rademacher", "cpu")
        self.matrices, self.layers = matrices, layers

    def project(self, grads, model_id):
        return _flat_layers(grads, self.layers) @ self.matrices[model_id]


@pytest.mark.parametrize("count", [1, 3])
def test_projected_scores_equal_traker(tmp_path, count):
    """traker 0.3.2's TRAKer on CPU (float32, its default BasicScoreComputer), given our projection matrices: it
    divides the features by sqrt(D) (its lambda_reg is ours / D) and each model's inverse by its mean absolute
    entry c_m, so its scores are mean_m (kernel_m / c_m) x mean Q where ours are mean_m kernel_m x mean Q."""
    models = [tanh_mlp(seed) for seed in range(count)]
    train, queries = labelled_vectors(40, 1), labelled_vectors(5, 2)
    k, damping = 16, 0.5
    f = influence.fit(models, train, strategy="trak", projection=k, damping=damping, seed=3)
    d = sum(p.numel() for p in models[0].parameters())
    matrices = [trak.Projection([layer.size for layer in f.layers], k, 3, m).matrix(torch.float64)
                for m in range(count)]
    traker = TRAKer(model=copy.deepcopy(models[0]), task="image_classification", train_set_size=len(train[0]),
                    save_dir=str(tmp_path), device="cpu", projector=_OurProjection(matrices, ["hidden", "out"]),
                    use_half_precision=False, lambda_reg=damping / d, logging_level=logging.ERROR)
    for m, model in enumerate(models):
        traker.load_checkpoint(model.state_dict(), model_id=m)
        traker.featurize(batch=train, num_samples=len(train[0]))
    traker.finalize_features()
    for m, model in enumerate(models):
        traker.start_scoring_checkpoint(exp_name="q", checkpoint=model.state_dict(), model_id=m,
                                        num_targets=len(queries[0]))
        traker.score(batch=queries, num_samples=len(queries[0]))
    theirs = torch.as_tensor(traker.finalize_scores(exp_name="q")).T.double()

    parts, weight = [], 0
    for member in f.members:
        x, q = member.featurize(influence.inputs.examples(train, "train"), None)
        phi, _ = member.featurize(influence.inputs.examples(queries, "queries"), None)
        inverse = torch.linalg.inv(member.gram / d + damping / d * torch.eye(k, dtype=torch.float64))
        parts.append((member.solve(phi) @ x.T, float(inverse.abs().mean())))
        weight = weight + q
    weight = weight / count
    ours = f.scores(queries, train)
    assert_close_rel(ours, sum(kernel for kernel, _ in parts) / count * weight[None], rel=1e-12)
    assert_close_rel(theirs, sum(kernel / c for kernel, c in parts) / count * weight[None], rel=1e-4)


def test_a_wide_projection_agrees_with_none():
    net, train, queries = tanh_mlp(), labelled_vectors(200, 1), labelled_vectors(5, 2)
    none = influence.fit(net, train, strategy="trak", projection=None)
    damping = 100 * none.damping["model 0"]          # a tenth of the mean eigenvalue: the projection's noise is
    exact = influence.fit(net, train, strategy="trak", projection=None, damping=damping).scores(queries, train)
    wide = influence.fit(net, train, strategy="trak", projection=1024, damping=damping).scores(queries, train)
    narrow = influence.fit(net, train, strategy="trak", projection=4, damping=damping).scores(queries, train)
    r = [float(torch.corrcoef(torch.stack([exact.flatten(), s.flatten()]))[0, 1]) for s in (wide, narrow)]
    assert r[0] > 0.999 and r[1] < 0.99, r


def test_the_seed_fixes_the_projection_and_chunking_changes_nothing(monkeypatch):
    net, train, queries = tanh_mlp(), labelled_vectors(30, 1), labelled_vectors(4, 2)
    reference = influence.fit(net, train, strategy="trak", projection=200, seed=5).scores(queries, train)
    assert torch.equal(influence.fit(net, train, strategy="trak", projection=200, seed=5).scores(queries, train),
                       reference)
    other = influence.fit(net, train, strategy="trak", projection=200, seed=6).scores(queries, train)
    assert not torch.allclose(other, reference, rtol=1e-3)
    chunked = influence.fit(net, train, strategy="trak", projection=200, seed=5, batch_size=7)
    assert_close_rel(chunked.scores(queries, train), reference, rel=1e-10)
    monkeypatch.setattr(trak, "PROJECTION_BYTES", 0)   # R drawn block by block for every chunk, never whole
    blocks = influence.fit(net, train, strategy="trak", projection=200, seed=5, batch_size=7)
    assert_close_rel(blocks.scores(queries, train), reference, rel=1e-10)
    sizes = [layer.size for layer in chunked.layers]
    assert not torch.equal(trak.Projection(sizes, 200, 5, 0).matrix(torch.float64),
                           trak.Projection(sizes, 200, 5, 1).matrix(torch.float64))    # model m draws its own
    r = trak.Projection(sizes, 3000, 5, 0).matrix(torch.float64)
    assert set(r.unique().tolist()) == {-3000 ** -0.5, 3000 ** -0.5}
    assert_close_rel(r @ r.T, torch.eye(sum(sizes), dtype=torch.float64), rel=0.1)


def test_scores_on_other_examples_and_save_load(tmp_path):
    models = [tanh_mlp(0), tanh_mlp(1)]
    train, queries, other = labelled_vectors(30, 1), labelled_vectors(4, 2), labelled_vectors(12, 3)
    f = influence.fit(models, train, strategy="trak", projection=64, seed=2)
    on_other = f.scores(queries, other)
    f.save(tmp_path / "trak")
    loaded = influence.load(tmp_path / "trak", models)
    assert isinstance(loaded, influence.Trak)
    assert_close_rel(loaded.scores(queries, train), f.scores(queries, train), rel=1e-10)
    assert_close_rel(loaded.scores(queries, other), on_other, rel=1e-10)
    assert loaded.damping == f.damping
    with pytest.raises(ValueError, match="fitted on 2 model"):
        influence.load(tmp_path / "trak", models[0])


@pytest.mark.parametrize("strategy", ["identity", "ekfac"])
def test_an_ensemble_is_the_mean_of_its_members(tmp_path, strategy):
    models = [tanh_mlp(seed) for seed in range(3)]
    train, queries = labelled_vectors(25, 1), labelled_vectors(4, 2)
    members = [influence.fit(model, train, strategy=strategy) for model in models]
    f = influence.fit(models, train, strategy=strategy)
    assert isinstance(f, influence.Ensemble) and f.strategy == strategy
    assert_close_rel(f.scores(queries, train), sum(m.scores(queries, train) for m in members) / 3, rel=1e-12)
    assert_close_rel(f.self_scores(train), sum(m.self_scores(train) for m in members) / 3, rel=1e-12)
    parts = f.scores(queries, train, by="layer")
    assert list(parts) == ["hidden", "out"]
    assert_close_rel(sum(parts.values()), f.scores(queries, train), rel=1e-12)
    f.save(tmp_path / "ensemble")
    loaded = influence.load(tmp_path / "ensemble", models)
    assert_close_rel(loaded.scores(queries, train), f.scores(queries, train), rel=1e-12)
    with pytest.raises(ValueError, match="has 3 models; got 1"):
        influence.load(tmp_path / "ensemble", [models[0]])


def test_refusals_name_the_argument_and_why():
    net, train, queries = tanh_mlp(), labelled_vectors(20, 1), labelled_vectors(3, 2)
    for damping in (0, -1.0, True, "x"):
        with pytest.raises(ValueError, match="damping must be None"):
            influence.fit(net, train, strategy="trak", damping=damping)
    for projection in (0, 1.5, True):
        with pytest.raises(ValueError, match="projection must be None"):
            influence.fit(net, train, strategy="trak", projection=projection)
    with pytest.raises(ValueError, match="projection applies only to strategy='trak'"):
        influence.fit(net, train, strategy="ekfac", projection=64)
    with pytest.raises(ValueError, match="fisher does not apply"):
        influence.fit(net, train, strategy="trak", fisher="empirical")
    with pytest.raises(ValueError, match="loss does not apply"):
        influence.fit(net, train, strategy="trak", loss=lambda output, y: output.sum(1))
    with pytest.raises(TypeError, match="non-empty list"):
        influence.fit([], train, strategy="trak")
    with pytest.raises(TypeError, match=r"model\[1\] must be a torch.nn.Module"):
        influence.fit([net, "net"], train, strategy="identity")
    with pytest.raises(ValueError, match="class labels"):
        influence.fit(net, (train[0], train[1].double()), strategy="trak")
    f = influence.fit(net, train, strategy="trak", projection=16)
    with pytest.raises(ValueError, match="by='layer' does not apply to strategy='trak'"):
        f.scores(queries, train, by="layer")
    with pytest.raises(ValueError, match="token_scores does not apply"):
        f.token_scores(queries, train)
    with pytest.raises(ValueError, match="projection=None makes the TRAK kernel"):
        influence.fit(nn.Linear(200, 60).double().eval(), labelled_vectors(5, 1, d=200, classes=60), strategy="trak",
                      projection=None)


def test_a_singular_kernel_needs_damping_within_float64():
    """A softmax linear classifier's margin gradients sum to 0 over its class rows: X^T X is singular without a
    projection. damping=None solves it; a damping below float64's resolution of X^T X is refused."""
    torch.manual_seed(0)
    linear = nn.Linear(4, 3).double().eval()
    train, queries = labelled_vectors(40, 1), labelled_vectors(3, 2)
    x, _ = _margin_features(linear, *train)
    assert torch.linalg.matrix_rank(x.T @ x) < x.shape[1]
    f = influence.fit(linear, train, strategy="trak", projection=None)
    assert_close_rel(f.scores(queries, train), _formula([linear], train, queries, f.damping["model 0"]), rel=1e-8)
    with pytest.raises(ValueError, match="below float64's resolution"):
        influence.fit(linear, train, strategy="trak", projection=None, damping=1e-300)


def test_model_left_as_found():
    nets = [tanh_mlp(0).train(), tanh_mlp(1)]
    nets[0].out.weight.requires_grad_(False)
    nets[0].hidden.weight.grad = torch.ones_like(nets[0].hidden.weight)
    before = [snapshot(net) for net in nets]
    train, queries = labelled_vectors(10, 1), labelled_vectors(2, 2)
    with pytest.warns(UserWarning, match="train mode"):
        f = influence.fit(nets, train, strategy="trak", projection=8)
    with pytest.warns(UserWarning, match="train mode"):
        f.scores(queries, train)
    with pytest.raises(ValueError, match="labels must be class indices"), pytest.warns(UserWarning):
        f.scores((queries[0], torch.tensor([0, 7])), train)
    for net, found in zip(nets, before, strict=True):
        assert_unchanged(net, found)
