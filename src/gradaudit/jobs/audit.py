"""``gradaudit audit``: ``run(preset, out)`` trains or loads the models, explains, audits and reports.

Image presets (quick, paper, tiny) train several seeds of a standard and a PGD-robust small
CNN, one by one (the spread over the audited models' own seeds is part of every
robust-vs-standard interval), explain them, run the audits and write the report. The data is
BlockMNIST (with its ground-truth audits) or any dataset ``data.load`` reads (``data``); the
models may be the user's own (``models``: ``NAME=package.module:factory@weights.pt``). The
``synthetic`` preset reproduces the paper's synthetic test bed. Every finished result goes to
``OUT/results.sqlite`` at once and trained models to ``OUT/models/``, so re-running the same
command after an interrupt skips finished work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import data, models, train
from ..audit import (
    activation_profiles,
    class_sensitivity,
    diffroar,
    local_faithfulness,
    randomization,
    road,
    signal_coordinate,
    signal_mass,
)
from ..audit.common import memo, named_methods
from ..audit.local_faithfulness import DEFAULT_NEIGHBOURHOODS
from ..keys import fingerprint
from ..loading import build_model
from ..methods import MetaStep, Method, Random
from ..report import method_grid, write_report
from ..report.reading import headline
from ..store import Store
from ..units import LocalExecutor
from .executor import make_executor
from .presets import Preset, SyntheticPreset
from .registry import LAYER_METHODS, METHODS, linear_methods
from .runfolder import check_run_folder
from .subjects import (
    check_classes,
    check_classifier,
    check_layer,
    check_same_weights,
    image_splits,
    parse_models,
    trained_models,
    user_models,
)


def _evaluated(nets: dict, test_set, adversary: train.PGD, store: Store) -> None:
    for name, net in nets.items():
        row = memo(store, "models", {"model": name}, {"model": fingerprint(net), "test": fingerprint(test_set),
                                                      "adversary": fingerprint(adversary)},
                   lambda net=net: train.evaluate(net, test_set, adversary))
        print(f"  {name}: clean test accuracy {row['clean']:.3f}, adversarial {row['adversarial']:.3f}")


def run(settings: Preset | SyntheticPreset, out: str | Path) -> dict:
    """Train, explain, audit and report; returns the headline numbers."""
    out = Path(out)
    start = time.perf_counter()
    inputs = _inputs(settings) if isinstance(settings, Preset) else None
    check_run_folder(out, settings)
    executor = (make_executor(settings.executor, settings.ray_address, settings.cpus_per_task, settings.gpus_per_task)
                if isinstance(settings, Preset) else LocalExecutor())
    try:
        store = Store(out / "results.sqlite")
        try:
            store.put("settings", {"run": str(len(store.rows("settings")))},
                      {"settings": asdict(settings), "preset": type(settings).__name__})
            if isinstance(settings, SyntheticPreset):
                _synthetic(settings, out, store)
            else:
                store.put("inputs", {"what": f"executor (run {len(store.rows('settings')) - 1})"},
                          {"description": f"{executor.name}, {executor.workers} worker"
                                          f"{'s' if executor.workers > 1 else ''}"
                                          + (f" at {executor.address}" if executor.name == "ray" else "")})
                _images(settings, inputs, out, store, executor)
            results = {audit: store.rows(audit) for audit in store.audits()}
        finally:
            store.close()
    finally:
        executor.close()
    report = write_report(out)
    numbers = headline(results)
    numbers["seconds"] = time.perf_counter() - start
    numbers["report"] = str(report.resolve())
    return numbers


def _datasets(settings: Preset) -> dict:
    """{layout: (train, test)}: BlockMNIST (random and, with ``top_layout``, Top) or the user's data."""
    options = {"size": settings.size, "test_fraction": settings.test_fraction, "seed": settings.seed,
               "trust_pickle": settings.trust_pickle, "digits": settings.digits, "copies": settings.copies,
               "source": settings.source}
    blockmnist = settings.data.partition(":")[0] == "blockmnist"
    layouts = ("random", "top") if blockmnist and settings.top_layout and not settings.models else ("random",)
    return {layout: image_splits(settings.data, position=layout, **options) for layout in layouts}


@dataclass(frozen=True)
class _Inputs:
    """What an image run works on, read and checked before its run folder is compared or touched: the
    datasets by layout, the number of classes, the user's models (empty: trained here) with their "inputs"
    rows, the methods and the factory of the model DiffROAR retrains."""

    sets: dict
    classes: int
    user: dict[str, torch.nn.Module]
    described: dict[str, dict]
    methods: dict[str, Method]
    retrain: Callable[[], torch.nn.Module]


def _inputs(settings: Preset) -> _Inputs:
    """Read the data and the user's models, build the methods, and check that the models (or one as trained
    here) and the retrained model fit the data and have the layer: every input error comes first."""
    sets = _datasets(settings)
    train_set, test_set = sets["random"]
    classes = check_classes(train_set.y, test_set.y, settings.data)
    in_shape = tuple(train_set.x.shape[1:])
    user, described = user_models(settings.models, settings.trust_pickle) if settings.models else ({}, {})
    methods = named_methods([METHODS[m](settings) for m in settings.methods])
    factory = settings.retrain or (parse_models(settings.models)[0].factory if settings.models else None)
    hidden = settings.retrain_hidden

    def retrain():                                   # closes over what builds the model, not where it runs
        if factory:
            return build_model(factory, "--retrain")
        return models.mlp(in_shape=in_shape, classes=classes, hidden=hidden)

    with torch.random.fork_rng():                    # building models to check them leaves the global RNG alone
        subjects = user or {"trained here": models.small_cnn(in_shape=in_shape, classes=classes,
                                                             width=settings.width)}
        for name, net in subjects.items():
            check_classifier(net, name, train_set.x, classes)
            if any(m in LAYER_METHODS for m in settings.methods):
                check_layer(net, name, settings.layer)
        check_classifier(retrain(), "retrained by DiffROAR", train_set.x, classes)
    return _Inputs(sets, classes, user, described, methods, retrain)


def _images(settings: Preset, inputs: _Inputs, out: Path, store: Store, executor) -> None:
    sets, classes = inputs.sets, inputs.classes
    train_set, test_set = sets["random"]
    in_shape = tuple(train_set.x.shape[1:])
    for split, part in (("train", train_set), ("test", test_set)):
        store.put("inputs", {"what": f"data {split}"},
                  {"description": f"{len(part)} images {'x'.join(map(str, in_shape))}, {classes} classes "
                                  f"({settings.data})"})
    print(f"data {settings.data}: {len(train_set)} train / {len(test_set)} test images {list(in_shape)}, "
          f"{classes} classes", flush=True)
    attack = train.PGD(**settings.adversary)
    nets = {}
    if settings.models:
        check_same_weights(inputs.described, store)
        nets[("random", "user")] = inputs.user
    else:
        print(f"training {settings.seeds_per_model} seeds per model", flush=True)

        def build():
            return models.small_cnn(in_shape=in_shape, classes=classes, width=settings.width)

        seeds = [1000 * settings.seed + i for i in range(settings.seeds_per_model)]
        for layout, (layout_train, _) in sets.items():
            suffix = "" if layout == "random" else "-top"
            for kind in ("standard", "robust") if layout == "random" else ("standard",):
                names = [f"{kind}{suffix}/{i}" for i in range(settings.seeds_per_model)]
                nets[(layout, kind)] = trained_models(names, build, layout_train, settings.recipe, seeds,
                                                      attack if kind == "robust" else None, out / "models",
                                                      f"{kind}{suffix}")
                recipe = train.Recipe.of(**settings.recipe).describe(kind == "robust")
                store.put("inputs", {"what": f"models {names[0]} .. {names[-1]}"},
                          {"description": f"small CNN (width {settings.width}) trained here on "
                                          f"{'BlockMNIST-Top' if suffix else settings.data}: {recipe}"
                                          + (f", PGD linf eps {attack.eps:g}" if kind == "robust" else "")})
    methods = inputs.methods
    for name, row in inputs.described.items():
        store.put("inputs", {"what": f"model {name}"}, row)
    for (layout, _), group in nets.items():
        _evaluated(group, sets[layout][1], attack, store)
    retrain_model = inputs.retrain
    retrained = settings.retrain or (parse_models(settings.models)[0].factory if settings.models else
                                     f"MLP (hidden {settings.retrain_hidden})")
    store.put("inputs", {"what": "DiffROAR retrains"},
              {"description": f"{retrained}: {train.Recipe.of(**settings.retrain_recipe).describe()}, "
                              f"fill {settings.fill}"})
    examples = slice(0, 6)
    for (layout, _), group in nets.items():
        if layout != "random":
            continue
        for name, net in group.items():
            if settings.models or name.endswith("/0"):
                maps = {n: m(net, test_set.x[examples], test_set.y[examples]) for n, m in methods.items()}
                method_grid(test_set.x[examples], maps, out / "figures" / f"{name.replace('/', '-')}.png",
                            titles=[f"label {int(v)}" for v in test_set.y[examples]], methods=methods)
    limit = settings.audit_images
    saliency = {n: m for n, m in methods.items() if n == "Saliency"}
    sensitive = {n: m for n, m in methods.items() if n != "Random"}
    meta = {f"{n}+meta": MetaStep(m) for n, m in sensitive.items()}
    ground_truth = hasattr(test_set, "signal_mask")
    for number, ((layout, _), group) in enumerate(nets.items()):
        for index, (name, net) in enumerate(group.items()):
            print(f"auditing {name}", flush=True)
            common = {"model_name": name, "store": store}
            # The control draws its own maps for every audited model, so its interval covers the mask draw too.
            methods = {n: Random(seed=1_000_003 * settings.seed + 1000 * number + index) if n == "Random" else m
                       for n, m in methods.items()}
            if ground_truth:
                signal_mass(methods if layout == "random" else saliency, net, sets[layout][1], limit=limit, **common)
            if layout != "random":
                continue
            diffroar(methods, net, train_set, test_set, model_fn=retrain_model, fractions=settings.fractions,
                     repeats=settings.repeats, recipe=train.Recipe.of(**settings.retrain_recipe),
                     fill=settings.fill, leak_check=settings.leak_check and index == 0,
                     blur_control=settings.blur_control, seed=1_000_003 * settings.seed + 100_000 * index,
                     executor=executor, **common)
            road(methods, net, test_set, fractions=settings.road_fractions, limit=limit, seed=settings.seed, **common)
            class_sensitivity(sensitive, net, test_set, limit=limit, **common)
            class_sensitivity(meta, net, test_set, limit=settings.meta_images, **common)
            randomization(sensitive, net, test_set, limit=min(limit, 100), seed=settings.seed, **common)
            if settings.layer in dict(net.named_modules()):
                activation_profiles(net, test_set, settings.layer, limit=limit, **common)
            else:
                print(f"  activation profiles skipped: {name} has no layer {settings.layer!r} (give --layer)")
            if settings.faithfulness:
                local_faithfulness(linear_methods(), net, test_set, neighbourhoods=DEFAULT_NEIGHBOURHOODS,
                                   samples=128, limit=8, seed=settings.seed, **common)


def _synthetic(settings: SyntheticPreset, out: Path, store: Store) -> None:
    train_set = data.signal_coordinates(settings.train_size, d=settings.d, seed=2 * settings.seed)
    test_set = data.signal_coordinates(settings.test_size, d=settings.d, seed=2 * settings.seed + 1)
    print(f"synthetic signal-coordinate data: d = {settings.d}, {len(train_set)} train / {len(test_set)} test",
          flush=True)
    attack = train.PGD(norm="linf", eps=settings.eps, steps=settings.pgd_steps, step_size=0.25 * settings.eps,
                       lower=-1.0, upper=1.0)

    def build():
        return models.mlp(in_shape=(settings.d,), classes=2, hidden=settings.width)

    for kind, recipe in (("standard", settings.standard_recipe), ("robust", settings.robust_recipe)):
        net = trained_models([kind], build, train_set, recipe, [settings.seed],
                             attack if kind == "robust" else None, out / "models", kind)[kind]
        _evaluated({kind: net}, test_set, attack, store)
        signal_coordinate(None, net, test_set, model_name=kind, store=store)


def print_summary(numbers: dict) -> None:
    """The headline of ``run``'s numbers, as ``gradaudit audit`` prints it."""
    print("\nresult (95% intervals; verdicts follow them):")
    for line in numbers["lines"]:
        print(f"  - {line}")
    print(f"finished in {numbers['seconds']:.0f}s; report: {numbers['report']}")
