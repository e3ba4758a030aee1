"""``influence.fit``: estimate the curvature of a model's training loss once; ``influence.load`` reads it back."""

from __future__ import annotations

import numbers
from collections.abc import Callable

from torch import nn

from ..engine.capture import capture
from ..engine.checks import check_batch_size, check_choice, check_model
from . import store
from .factors import covariances, eigenbases, fisher_pass, gauss_newton, lambdas
from .fitted import Influence
from .inputs import chunk_size, chunks, device_of, examples
from .layers import Layer, tracked_layers
from .losses import FisherDraws, cross_entropy
from .strategies import APPROXIMATE, STRATEGIES, Curvature, check_exact_size, dampings

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


def fit(model: nn.Module, train, strategy: str = "ekfac", damping: float | None = None, layers=None,
        fisher: str = "true", loss: Callable | None = None, batch_size: int | None = None,
        seed: int = 0) -> Influence:
    """Fit influence functions of ``model`` on its training set ``train``.

    model: the trained model (left exactly as found).
    train: the training examples, any dataset ``train.fit`` accepts ((x, y) tensors, a Dataset...).
    strategy: "identity" (gradient dot products), "diagonal", "kfac", "ekfac" (Grosse et al. 2023) or
        "exact" (the Gauss-Newton matrix itself, for small models: what the others approximate).
    damping: lambda added to G; None is 0.1 x the mean eigenvalue of each layer's curvature.
    layers: None (every nn.Linear and nn.Conv2d) or their dotted names.
    fisher: "true" estimates G from labels drawn from the model (seeded by ``seed``); "empirical" uses
        the labels. ``exact`` computes the true Fisher's expectation, the Gauss-Newton matrix, exactly.
    loss: ``(output, y) -> Tensor[B]`` per-example losses; None is cross-entropy on [B, classes] logits.
    batch_size: examples per pass; None picks it under ``ga.config.memory_budget``. Results do not depend on it.
    Returns an ``Influence``: ``.scores(queries, train)``, ``.self_scores(train)``, ``.save(folder)``.
    """
    check_model(model)
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("fisher", fisher, FISHERS)
    _check_damping(damping, strategy)
    check_batch_size(batch_size)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be a callable (output, y) -> Tensor[batch], got {type(loss).__name__}")
    tracked = tracked_layers(model, layers)
    if strategy == "exact":
        check_exact_size(tracked)
    found = examples(train, "train")
    settings = {"fisher": fisher, "seed": int(seed), "damping": None if damping is None else float(damping),
                "batch_size": batch_size, "input_shape": list(found.x.shape[1:])}
    with capture(model, [(layer.name, layer.module) for layer in tracked]) as cap:
        per_example = 2 * sum(layer.size for layer in tracked) * 8
        size = chunk_size(model, found.x[:2].to(device_of(model)), batch_size, per_example)
        factors = _factors(cap, tracked, found, strategy, fisher, loss, size, int(seed))
    curvature = Curvature(strategy, tracked, factors, dampings(strategy, tracked, factors, damping))
    return Influence(model, tracked, curvature, settings, loss)


def load(folder, model: nn.Module, loss: Callable | None = None) -> Influence:
    """The ``Influence`` saved in ``folder`` by ``Influence.save``, on ``model`` (the same architecture and
    weights it was fitted on; ``loss`` as given to ``fit``, which cannot be saved)."""
    check_model(model)
    settings, factors = store.read(folder)
    tracked = tracked_layers(model, settings["layers"])
    for layer, shape in zip(tracked, settings["shapes"], strict=True):
        if list(layer.shape) != list(shape):
            raise ValueError(f"layer {layer.name!r} of the model has weights {list(layer.shape)} (bias as the last "
                             f"column), but the factors in {str(folder)!r} were fitted on {shape}")
    device = device_of(model)
    factors = {name: {key: t.to(device) for key, t in f.items()} for name, f in factors.items()}
    curvature = Curvature(settings["strategy"], tracked, factors, settings["damping_per_layer"])
    kept = {key: settings[key] for key in ("fisher", "seed", "damping", "batch_size", "input_shape")}
    return Influence(model, tracked, curvature, kept, loss)
