"""``influence.fit``: estimate the curvature of a model's training loss once (or TRAK's kernel, or either for
an ensemble of models); ``influence.load`` reads it back."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..engine.capture import capture
from ..engine.checks import check_batch_size, check_choice
from . import store, trak
from .ensemble import Ensemble
from .factors import covariances, eigenbases, fisher_pass, gauss_newton, lambdas
from .fitted import Influence
from .inputs import chunk_size, chunks, device_of, examples
from .layers import Layer, tracked_layers
from .losses import FisherDraws, cross_entropy
from .strategies import APPROXIMATE, STRATEGIES, Curvature, check_exact_size, dampings
from .trak import PROJECTION, Trak

FISHERS = ("true", "empirical")


def _check_damping(damping, strategy: str) -> None:
    """None, or a number: > 0 for the approximate strategies (their curvature has zero eigenvalues wherever a
    direction is never seen, such as an input feature that is always 0), >= 0 for exact (refused later if G
    is singular)."""
    if damping is None:
        return
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real) or not damping >= 0:
        raise ValueError(f"damping must be None (0.1 x mean eigenvalue per layer) or a number >= 0, got {damping!r}")
    if strategy == "identity":
        raise ValueError("damping does not apply to strategy='identity' (plain gradient dot products); leave it None")
    if strategy in APPROXIMATE and not damping > 0:
        raise ValueError(f"damping must be > 0 for strategy={strategy!r}, got {damping!r}: its curvature estimate has "
                         "zero eigenvalues wherever a direction is never seen (an input feature that is always 0), "
                         "and their inverse is undefined; pass damping > 0 or None (0.1 x mean eigenvalue per layer)")


def _factors(cap, layers: list[Layer], found, strategy: str, fisher: str, loss: Callable | None, size: int,
             seed: int) -> dict:
    device = device_of(cap.model)
    run = fisher_pass(loss, fisher, FisherDraws(len(found), seed))

    def batches():
        return chunks(found, size, device)

    if strategy == "identity":
        return {}
    if strategy == "diagonal":
        return {name: {"Lambda": value} for name, value in lambdas(cap, layers, batches(), run, None).items()}
    if strategy == "exact":
        return {"gauss_newton": {"G": gauss_newton(cap, layers, batches(), loss or cross_entropy, fisher)}}
    bases = eigenbases(covariances(cap, layers, batches(), run))
    if strategy == "kfac":
        return bases
    fitted = lambdas(cap, layers, batches(), run, bases)
    return {name: {"A_vectors": b["A_vectors"], "S_vectors": b["S_vectors"], "Lambda": fitted[name]}
            for name, b in bases.items()}


def _models(model) -> list[nn.Module]:
    """``model`` (one model, or a non-empty list of models: an ensemble) as a list of models."""
    if isinstance(model, nn.Module):
        return [model]
    if not isinstance(model, (list, tuple)) or not model:
        got = "an empty list" if isinstance(model, (list, tuple)) else type(model).__name__
        raise TypeError(f"model must be a torch.nn.Module or a non-empty list of them (an ensemble), got {got}")
    for i, m in enumerate(model):
        if not isinstance(m, nn.Module):
            raise TypeError(f"model[{i}] must be a torch.nn.Module, got {type(m).__name__}")
    return list(model)


def _check_trak(projection, fisher: str, loss, strategy: str) -> None:
    """``projection`` is TRAK's alone; ``fisher`` and ``loss`` are not TRAK's (its output function is the margin)."""
    if strategy != "trak":
        if projection != PROJECTION:
            raise ValueError(f"projection applies only to strategy='trak' (random features of its margin "
                             f"gradients); leave it out for strategy={strategy!r}")
        return
    trak.check_projection(projection)
    if fisher != "true":
        raise ValueError("fisher does not apply to strategy='trak' (it has no Fisher: its kernel is X^T X of the "
                         "margin gradients); leave it out")
    if loss is not None:
        raise ValueError("loss does not apply to strategy='trak': its output function is the margin "
                         "log(p_y / (1 - p_y)) of a classifier's [batch, classes] logits; leave it out")


def fit(model, train, strategy: str = "ekfac", damping: float | None = None, layers=None,
        fisher: str = "true", loss: Callable | None = None, batch_size: int | None = None,
        seed: int = 0, projection: int | None = PROJECTION):
    """Fit influence functions of ``model`` on its training set ``train``.

    model: the trained model (left exactly as found), or a list of models (an ensemble: the same architecture
        trained with different seeds): the scores are the mean of the members' (TRAK: its own estimator).
    train: the training examples, any dataset ``train.fit`` accepts ((x, y) tensors, a Dataset...).
    strategy: "identity" (gradient dot products), "diagonal", "kfac", "ekfac" (Grosse et al. 2023),
        "exact" (the Gauss-Newton matrix itself, for small models: what the others approximate) or
        "trak" (Park et al. 2023: randomly projected margin gradients, kernel X^T X + lambda I).
    damping: lambda added to G; None is 0.1 x the mean eigenvalue of each layer's curvature (trak: lambda added
        to X^T X, None is 0.001 x its mean eigenvalue; it must be > 0).
    layers: None (every nn.Linear and nn.Conv2d) or their dotted names.
    fisher: "true" estimates G from labels drawn from the model (seeded by ``seed``); "empirical" uses
        the labels. ``exact`` computes the true Fisher's expectation, the Gauss-Newton matrix, exactly.
    loss: ``(output, y) -> Tensor[B]`` per-example losses; None is cross-entropy on [B, classes] logits.
    batch_size: examples per pass; None picks it under ``ga.config.memory_budget``. Results do not depend on it.
    seed: draws the true Fisher's labels; for trak, the random projection (model m of an ensemble gets its own).
    projection: trak only: the number of random features k (traker's default 2048), or None for none.
    Returns an ``Influence`` (an ``Ensemble`` of them for several models; a ``Trak`` for strategy="trak"):
    ``.scores(queries, train)``, ``.self_scores(train)``, ``.save(folder)``.
    """
    models = _models(model)
    check_choice("strategy", strategy, STRATEGIES)
    _check_trak(projection, fisher, loss, strategy)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if strategy == "trak":
        trak.check_damping(damping)
        check_batch_size(batch_size)
        found = examples(train, "train")
        members = trak.fit_members(models, found, layers, projection, damping, int(seed), batch_size)
        settings = {"projection": projection, "seed": int(seed), "damping": None if damping is None else float(damping),
                    "batch_size": batch_size, "input_shape": list(found.x.shape[1:])}
        return Trak(members, settings, found)
    if len(models) > 1:
        return Ensemble([_fit_one(m, train, strategy, damping, layers, fisher, loss, batch_size, int(seed))
                         for m in models])
    return _fit_one(models[0], train, strategy, damping, layers, fisher, loss, batch_size, int(seed))


def _fit_one(model: nn.Module, train, strategy: str, damping: float | None, layers, fisher: str,
             loss: Callable | None, batch_size: int | None, seed: int) -> Influence:
    """One model's ``Influence`` (the curvature strategies)."""
    check_choice("fisher", fisher, FISHERS)
    _check_damping(damping, strategy)
    check_batch_size(batch_size)
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be a callable (output, y) -> Tensor[batch], got {type(loss).__name__}")
    tracked = tracked_layers(model, layers)
    if strategy == "exact":
        check_exact_size(tracked)
    found = examples(train, "train")
    settings = {"fisher": fisher, "seed": seed, "damping": None if damping is None else float(damping),
                "batch_size": batch_size, "input_shape": list(found.x.shape[1:])}
    with capture(model, [(layer.name, layer.module) for layer in tracked]) as cap:
        per_example = 2 * sum(layer.size for layer in tracked) * 8
        size = chunk_size(model, found.x[:2].to(device_of(model)), batch_size, per_example)
        factors = _factors(cap, tracked, found, strategy, fisher, loss, size, seed)
    curvature = Curvature(strategy, tracked, factors, dampings(strategy, tracked, factors, damping))
    return Influence(model, tracked, curvature, settings, loss)


def _check_shapes(tracked: list[Layer], shapes, folder) -> None:
    """A ValueError naming the first tracked layer whose weights are not shaped as the saved factors say."""
    for layer, shape in zip(tracked, shapes, strict=True):
        if list(layer.shape) != list(shape):
            raise ValueError(f"layer {layer.name!r} of the model has weights {list(layer.shape)} (bias as the last "
                             f"column), but the factors in {str(folder)!r} were fitted on {shape}")


def load(folder, model, loss: Callable | None = None):
    """What ``save(folder)`` wrote, on ``model`` (the same architecture and weights it was fitted on; a list of
    them for an ensemble or a TRAK of several models; ``loss`` as given to ``fit``, which cannot be saved)."""
    models = _models(model)
    settings, factors = store.read(folder)
    if "ensemble" in settings:
        if len(models) != settings["ensemble"]:
            raise ValueError(f"the ensemble in {str(folder)!r} has {settings['ensemble']} models; got {len(models)}")
        return Ensemble([load(Path(folder) / f"model_{m}", member, loss) for m, member in enumerate(models)])
    for member in models:
        _check_shapes(tracked_layers(member, settings["layers"]), settings["shapes"], folder)
    if settings["strategy"] == "trak":
        return trak.load(settings, factors, models, folder)
    if len(models) != 1:
        raise ValueError(f"the influence in {str(folder)!r} was fitted on one model; got {len(models)}")
    tracked = tracked_layers(models[0], settings["layers"])
    device = device_of(models[0])
    factors = {name: {key: t.to(device) for key, t in f.items()} for name, f in factors.items()}
    curvature = Curvature(settings["strategy"], tracked, factors, settings["damping_per_layer"])
    kept = {key: settings[key] for key in ("fisher", "seed", "damping", "batch_size", "input_shape")}
    return Influence(models[0], tracked, curvature, kept, loss)
