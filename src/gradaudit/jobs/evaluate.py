"""``gradaudit evaluate``: the metrics that need no retraining, on the user's model and data, and the
audit of the metrics themselves.

For each model (the user's ``--models``, or one small CNN trained here on the training split), the
methods and the two controls (Random, and a Sobel edge map that ignores the model) are scored by every
chosen metric on the first ``images`` test images; then ``audit.metric_audit`` says, per metric,
whether it separates the methods from the controls, whether its ranking of the methods reproduces
across images (Krippendorff's alpha), and how it agrees with the other metrics. Every finished row
goes to ``OUT/results.sqlite`` at once and trained models to ``OUT/models/``: a rerun resumes.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .. import models, train
from ..audit import (
    completeness,
    complexity,
    emprt,
    faithfulness_correlation,
    infidelity,
    input_invariance,
    insertion_deletion,
    irof,
    local_lipschitz,
    metric_audit,
    monotonicity,
    mprt,
    pointing_game,
    random_logit,
    region_perturbation,
    relative_input_stability,
    relevance_mass,
    relevance_rank,
    road,
    sensitivity_max,
    smprt,
    sparseness,
)
from ..audit.common import importance, method_name
from ..audit.results import AuditResult
from ..engine import auto_rows, prepared
from ..engine.backprop import predicted_classes
from ..maps import resize
from ..methods import LayerMethod, Method, Random, Sobel
from ..methods.feature_map import auto_layer
from ..report import write_report
from ..report.reading import evaluation_claims
from ..store import Store
from .presets import LOCALISATION_METRICS, METRIC_NAMES, EvaluatePreset
from .registry import LAYER_METHODS, build_methods
from .runfolder import check_run_folder
from .subjects import (
    check_classes,
    check_classifier,
    check_count,
    check_layer,
    check_same_weights,
    image_splits,
    trained_models,
    user_models,
)

# Methods whose attributions already multiply by (x - baseline): infidelity scores them against the
# perturbation's indicator I / (x - baseline), as Captum's ``multiply_by_inputs=True`` (METHODS.md).
MULTIPLY_BY_INPUT = frozenset({"inputxgradient", "ig", "deeplift"})


def run(settings: EvaluatePreset, out: str | Path) -> dict:
    """Train or load the models, score every method under every metric, audit the metrics, write the
    report; returns {"results": {audit: rows}, "seconds", "report"}."""
    out = Path(out)
    start = time.perf_counter()
    inputs = _inputs(settings)
    check_run_folder(out, settings)
    store = Store(out / "results.sqlite")
    try:
        store.put("settings", {"run": str(len(store.rows("settings")))},
                  {"settings": asdict(settings), "preset": type(settings).__name__})
        _evaluate(settings, inputs, out, store)
        results = {audit: store.rows(audit) for audit in store.audits()}
    finally:
        store.close()
    report = write_report(out)
    return {"results": results, "seconds": time.perf_counter() - start, "report": str(report.resolve())}


def chosen_metrics(settings: EvaluatePreset, test_set) -> tuple[str, ...]:
    """The metrics to run: ``settings.metrics``, or all the data supports; localisation metrics on data
    without masks are an error when asked for by name."""
    masked = hasattr(test_set, "signal_mask")
    if not settings.metrics:
        return tuple(m for m in METRIC_NAMES if masked or m not in LOCALISATION_METRICS)
    missing = [m for m in settings.metrics if m in LOCALISATION_METRICS and not masked]
    if missing:
        raise ValueError(f"--metrics {missing[0]} needs a ground-truth mask per image, and --data {settings.data} has "
                         "none: use blockmnist, or folder:DIR with a DIR/masks folder (a PNG of the same name per "
                         "image), or leave it out of --metrics")
    return settings.metrics


@dataclass(frozen=True)
class _Inputs:
    """What a run works on, read and checked before its run folder is compared or touched: the splits, the
    number of classes, the metrics, and the user's models (empty: one trained here) with their "inputs" rows."""

    train: object
    test: object
    classes: int
    metrics: tuple[str, ...]
    user: dict[str, torch.nn.Module]
    described: dict[str, dict]


def _inputs(settings: EvaluatePreset) -> _Inputs:
    """Read the data and the user's models and check that the models (or one as trained here) fit the data and
    have the layer, and that the data holds the images and masks asked for: every input error comes first."""
    train_set, test_set = image_splits(settings.data, size=settings.size, test_fraction=settings.test_fraction,
                                       seed=settings.seed, trust_pickle=settings.trust_pickle, digits=settings.digits,
                                       copies=settings.copies, source=settings.source)
    classes = check_classes(train_set.y, test_set.y, settings.data)
    check_count("--images", settings.images, len(test_set), "test images", settings.data)
    metrics = chosen_metrics(settings, test_set)
    user, described = user_models(settings.models, settings.trust_pickle) if settings.models else ({}, {})
    with torch.random.fork_rng():                    # building a model to check it leaves the global RNG alone
        subjects = user or {"trained here": models.small_cnn(in_shape=tuple(train_set.x.shape[1:]), classes=classes,
                                                             width=settings.width)}
        for name, net in subjects.items():
            check_classifier(net, name, train_set.x, classes)
            if any(m in LAYER_METHODS for m in settings.methods):
                check_layer(net, name, settings.layer)
    return _Inputs(train_set, test_set, classes, metrics, user, described)


def _models(settings: EvaluatePreset, inputs: _Inputs, out: Path, store: Store) -> dict:
    if settings.models:
        check_same_weights(inputs.described, store)
        for name, row in inputs.described.items():
            store.put("inputs", {"what": f"model {name}"}, row)
        return inputs.user
    train_set, classes = inputs.train, inputs.classes

    def build():
        return models.small_cnn(in_shape=tuple(train_set.x.shape[1:]), classes=classes, width=settings.width)

    nets = trained_models(["cnn"], build, train_set, settings.recipe, [1000 * settings.seed], None, out / "models",
                          "cnn")
    store.put("inputs", {"what": "model cnn"},
              {"description": f"small CNN (width {settings.width}) trained here on the training split of "
                              f"{settings.data}: {train.Recipe.of(**settings.recipe).describe()}"})
    return nets


def _evaluate(settings: EvaluatePreset, inputs: _Inputs, out: Path, store: Store) -> None:
    test_set, classes, metrics = inputs.test, inputs.classes, inputs.metrics
    store.put("inputs", {"what": "data"},
              {"description": f"{settings.images} of {len(test_set)} test images {list(test_set.x.shape[1:])}, "
                              f"{classes} classes ({settings.data})"})
    nets = _models(settings, inputs, out, store)
    for name, net in nets.items():
        named = build_methods(settings.methods, replace(settings, layer=_layer(settings, net, name, test_set.x[:1])))
        print(f"evaluating {name}: {len(named)} methods + Random, Sobel; metrics {', '.join(metrics)}", flush=True)
        results = scored(named, net, test_set, metrics, settings, name, store)
        for row in metric_audit(results, resamples=settings.resamples, seed=settings.seed).rows:
            store.put("metric_audit", {"model": name, "metric": row["metric"]}, {"model": name, **row})


def _layer(settings: EvaluatePreset, model: torch.nn.Module, name: str, x: torch.Tensor) -> str:
    """The layer of the layer methods: ``settings.layer``, or the one ``layer="auto"`` picks (printed)."""
    if settings.layer != "auto" or not any(m in LAYER_METHODS for m in settings.methods):
        return settings.layer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen, _ = auto_layer(model, x)
    print(f"  {name}: --layer auto chose {chosen!r}", flush=True)
    return chosen


def scored(named: dict[str, Method], model: torch.nn.Module, data, metrics, settings: EvaluatePreset,
           model_name: str, store: Store | None = None) -> list[AuditResult]:
    """Every metric in ``metrics`` for the registry-named methods ``named`` and the two controls, on the
    first ``settings.images`` images of ``data``: one AuditResult per audit run, rows stored as they finish."""
    methods = {method_name(m): m for m in named.values()}
    methods.update({"Random": Random(seed=settings.seed), "Sobel": Sobel()})
    common = {"limit": settings.images, "model_name": model_name, "store": store}
    results = []

    def run_metric(label, audit, *args, **kwargs):
        began = time.perf_counter()
        results.append(audit(*args, **{**common, **kwargs}))
        print(f"  {label}: {time.perf_counter() - began:.0f}s", flush=True)

    if {"insertion", "deletion"} & set(metrics):
        run_metric("insertion/deletion", insertion_deletion, methods, model, data, step=settings.step,
                   seed=settings.seed)
    if "infidelity" in metrics:
        run_metric("infidelity", _infidelity, named, methods, model, data, settings)
    if "sensitivity" in metrics:
        run_metric("sensitivity", sensitivity_max, methods, model, data, radius=settings.radius,
                   samples=settings.sensitivity_samples, seed=settings.seed)
    if "faithfulness" in metrics:
        run_metric("faithfulness correlation", faithfulness_correlation, methods, model, data,
                   samples=settings.faithfulness_samples, seed=settings.seed)
    if "monotonicity" in metrics:
        run_metric("monotonicity", monotonicity, methods, model, data, seed=settings.seed)
    if "pointing" in metrics:
        run_metric("pointing game", pointing_game, methods, model, data)
    if "relevance" in metrics:
        run_metric("relevance mass", relevance_mass, methods, model, data, seed=settings.seed)
        run_metric("relevance rank", relevance_rank, methods, model, data, seed=settings.seed)
    if "road" in metrics:
        run_metric("ROAD", road, methods, model, data, fractions=settings.road_fractions, seed=settings.seed)
    # Quantus's other categories (issue 33), in its order, on the first ``category_images`` images: most re-run
    # every method on changed models or inputs, so each costs several explanation passes.
    few = {"limit": min(settings.category_images, settings.images)}
    seeded = {**few, "seed": settings.seed}
    stability = {**seeded, "samples": settings.stability_samples}
    for name, label, audit, options in (
            ("sparseness", "sparseness", sparseness, few), ("complexity", "complexity", complexity, few),
            ("mprt", "MPRT", mprt, seeded), ("smprt", "sMPRT", smprt, {**seeded, "samples": settings.smprt_samples}),
            ("emprt", "eMPRT", emprt, seeded), ("random_logit", "random logit", random_logit, seeded),
            ("completeness", "completeness", completeness, few),
            ("input_invariance", "input invariance", input_invariance, few),
            ("lipschitz", "local Lipschitz", local_lipschitz, stability),
            ("ris", "relative input stability", relative_input_stability, stability),
            ("irof", "IROF", irof, seeded), ("aopc", "region perturbation (AOPC)", region_perturbation, seeded)):
        if name in metrics:
            run_metric(label, audit, methods, model, data, **options)
    return results


def _infidelity(named: dict[str, Method], methods: dict, model, data, settings: EvaluatePreset, *, limit: int,
                model_name: str, store: Store | None) -> AuditResult:
    """Infidelity with square perturbations: methods that multiply by the input against the square's
    indicator (``binary``), the others against the change itself, all in one call so that every map is
    scored from the same run of the model; a layer method's map, upsampled to the image and applied to
    every channel, counts as a local map."""
    x = data.x[:limit]
    global_names = {method_name(m) for key, m in named.items() if key in MULTIPLY_BY_INPUT}
    scored_maps = {}
    for name, method in methods.items():
        if isinstance(method, LayerMethod):
            with prepared(model):
                classes = predicted_classes(model, x, auto_rows(model, x[:1], gradients=False))
            scored_maps[name] = resize(importance(method, model, x, classes, absolute=False), x.shape[-2:])
        else:
            scored_maps[name] = method
    return infidelity(scored_maps, model, data, samples=settings.infidelity_samples,
                      binary=sorted(global_names & set(methods)), seed=settings.seed, limit=limit,
                      model_name=model_name, store=store)


def print_summary(numbers: dict) -> None:
    """The metric audit and the reading of ``run``'s results, as ``gradaudit evaluate`` prints them."""
    results = numbers["results"]
    print("\nthe metrics, audited (each metric's verdict follows its intervals):")
    for row in results.get("metric_audit", []):
        print(f"  {row['model']} {row['metric']:26} {row['trust']}: {row['reading']}")
    for claim in evaluation_claims(results):
        print(f"  - {claim.sentence}")
    print(f"finished in {numbers['seconds']:.0f}s; report: {numbers['report']}")
