"""The main jobs: ``run(preset, out)`` is what ``gradaudit audit`` calls.

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

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .. import data, models, train
from ..engine.checks import check_positive_int
from ..loading import build_model, load_model
from ..methods import (
    CLIME,
    LIME,
    Deconvnet,
    DeepLift,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    KernelSHAP,
    LinearApprox,
    MetaStep,
    NormGrad,
    Occlusion,
    Random,
    Saliency,
    SmoothGrad,
)
from ..report import method_grid, write_report
from ..report.reading import headline
from ..store import Store
from .common import memo, named_methods
from .executor import LocalExecutor, make_executor
from .faithfulness import DEFAULT_NEIGHBOURHOODS, local_faithfulness
from .groundtruth import signal_coordinate, signal_mass
from .profiles import activation_profiles
from .road import road
from .roar import diffroar
from .sanity import randomization
from .sensitivity import class_sensitivity
from .subjects import check_classes, check_classifier, check_layer, parse_models


@dataclass(frozen=True)
class Preset:
    """Every setting of an image run. ``methods`` are names from ``METHODS``; recipes are
    ``train.Recipe`` fields. ``data`` is a ``data.load`` spec; ``models`` are ``--models`` entries
    (empty: train standard and robust models here); ``retrain`` the factory DiffROAR retrains
    (None: the first entry's factory, or an MLP for models trained here)."""

    data: str = "blockmnist"
    models: tuple = ()
    retrain: str | None = None
    test_fraction: float = 0.2
    size: tuple | None = None
    trust_pickle: bool = False
    digits: tuple = (0, 1)
    copies: int = 2
    source: str | None = None
    seeds_per_model: int = 4
    recipe: dict = field(default_factory=lambda: {"optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 64,
                                                  "adversary_warmup": 1.0})
    width: int = 16
    adversary: dict = field(default_factory=lambda: {"norm": "linf", "eps": 0.3, "steps": 7})
    top_layout: bool = True
    methods: tuple = ("saliency", "smoothgrad", "random")
    samples: int = 8
    steps: int = 16
    layer: str = "conv2"
    fractions: tuple = (0.02, 0.05, 0.1)
    repeats: int = 3
    retrain_recipe: dict = field(default_factory=lambda: {"optimizer": "adam", "lr": 1e-3, "epochs": 4,
                                                          "batch_size": 64})
    retrain_hidden: int = 128
    fill: float | str = 0.0
    leak_check: bool = True
    blur_control: bool = False
    road_fractions: tuple = (0.1, 0.3, 0.5)
    audit_images: int = 200
    meta_images: int = 40
    faithfulness: bool = False
    executor: str = "local"
    ray_address: str | None = None
    cpus_per_task: float = 1
    gpus_per_task: float = 0
    seed: int = 0


@dataclass(frozen=True)
class SyntheticPreset:
    """The synthetic test bed of Shah et al. (2021), with the authors' recipe (notebook
    ``02_fig_in_synthetic_data.ipynb`` in harshays/inputgradients): d = 10, 10,000 train /
    1,000 test, SGD lr 0.1 without momentum or weight decay, batch 250, lr x 0.75 every 50
    epochs (floor 0.01x), robust net: linf PGD eps 0.45, 8 steps of 0.25 eps, inputs in [-1, 1].
    Their hidden layer is 25,000 wide; ``width`` 2,000 reproduces the sign pattern in minutes."""

    d: int = 10
    train_size: int = 10_000
    test_size: int = 1_000
    width: int = 2_000
    standard_recipe: dict = field(default_factory=lambda: {
        "optimizer": "sgd", "lr": 0.1, "batch_size": 250, "schedule": "step", "gamma": 0.75, "every": 50,
        "floor": 0.01, "epochs": 20})
    robust_recipe: dict = field(default_factory=lambda: {
        "optimizer": "sgd", "lr": 0.1, "batch_size": 250, "schedule": "step", "gamma": 0.75, "every": 50,
        "floor": 0.01, "epochs": 60})
    eps: float = 0.45
    pgd_steps: int = 8
    seed: int = 0


PRESETS = {
    "quick": Preset(),
    "paper": Preset(copies=1, seeds_per_model=3, samples=50, steps=50, repeats=5, retrain_hidden=256,
                    recipe={"optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 64},
                    retrain_recipe={"optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 64},
                    fractions=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), blur_control=True,
                    fill="road", audit_images=1000, meta_images=200, road_fractions=(0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
                    methods=("saliency", "inputxgradient", "smoothgrad", "ig", "guidedbackprop", "gradcam",
                             "gradcampp", "normgrad", "random")),
    "tiny": Preset(copies=1, seeds_per_model=2, samples=2, steps=2, fractions=(0.05, 0.2), repeats=1,
                   recipe={"optimizer": "adam", "lr": 1e-3, "epochs": 1, "batch_size": 64},
                   retrain_recipe={"optimizer": "adam", "lr": 1e-3, "epochs": 1, "batch_size": 64},
                   retrain_hidden=16, audit_images=20, meta_images=4, road_fractions=(0.5,),
                   adversary={"norm": "linf", "eps": 0.3, "steps": 2}, methods=("saliency", "gradcam", "random")),
    "synthetic": SyntheticPreset(),
}

METHODS = {
    "saliency": lambda p: Saliency(),
    "inputxgradient": lambda p: InputXGradient(),
    "smoothgrad": lambda p: SmoothGrad(Saliency(), samples=p.samples, noise=0.15),
    "ig": lambda p: IntegratedGradients(steps=p.steps),
    "deeplift": lambda p: DeepLift(),
    "guidedbackprop": lambda p: GuidedBackprop(),
    "deconvnet": lambda p: Deconvnet(),
    "gradcam": lambda p: GradCAM(p.layer),
    "gradcampp": lambda p: GradCAMPlusPlus(p.layer),
    "normgrad": lambda p: NormGrad(p.layer),
    "linearapprox": lambda p: LinearApprox(p.layer),
    "random": lambda p: Random(seed=p.seed),
}
LAYER_METHODS = ("gradcam", "gradcampp", "normgrad", "linearapprox")


def linear_methods(samples: int = 256) -> dict:
    """The eight local-function-approximation methods of Han et al. (2022), as linear models."""
    return {
        "Gradient": Saliency(abs=False),
        "InputXGradient": InputXGradient(),
        "SmoothGrad": SmoothGrad(Saliency(abs=False), samples=32, sigma=0.1),
        "IntegratedGradients": IntegratedGradients(steps=32),
        "LIME": LIME(samples=samples),
        "CLIME": CLIME(samples=samples, sigma=0.1),
        "KernelSHAP": KernelSHAP(samples=samples),
        "Occlusion": Occlusion(window=1, stride=1),
    }


def preset(name: str, **overrides) -> Preset | SyntheticPreset:
    """A named preset with the given settings replaced (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    unknown = [m for m in chosen.get("methods", ()) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    base = PRESETS[name]
    known = set(asdict(base)) | ({"eps"} if isinstance(base, Preset) else set())
    ignored = sorted(set(chosen) - known)
    if ignored:
        raise ValueError(f"preset {name!r} has no setting {ignored[0]!r}")
    for setting in ("seeds_per_model", "repeats", "samples", "steps", "audit_images"):
        if setting in chosen:
            check_positive_int(setting.replace("_", "-"), chosen[setting])
    if "models" in chosen:
        chosen["models"] = tuple(str(entry) for entry in parse_models(chosen["models"]))
    for recipe in ("recipe", "retrain_recipe"):
        if recipe in chosen:
            chosen[recipe] = {**getattr(base, recipe), **chosen[recipe]}
            train.Recipe.of(**chosen[recipe])
    if "eps" in chosen and isinstance(base, Preset):
        chosen["adversary"] = {**base.adversary, "eps": chosen.pop("eps")}
    return replace(base, **chosen)


def _save(model: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)


def _trained(names: list[str], build, train_set, recipe: dict, seeds: list[int], adversary, folder: Path,
             label: str) -> dict[str, torch.nn.Module]:
    """Models ``names`` (seed ``seeds[i]`` each) trained on ``train_set``, or loaded from ``folder``.

    One by one rather than as a vmapped ensemble: on a CPU, vmap over convolutions measured
    2.5x slower than sequential training for three small CNNs (0.8x with PGD); same batches either way.
    """
    recipe = train.Recipe.of(**recipe)
    attack = f", PGD {adversary.norm} eps {adversary.eps:g}, {adversary.steps} steps" if adversary else ""
    print(f"training {len(names)} {label} models ({recipe.describe(adversary is not None)}{attack})", flush=True)
    trained = {}
    for name, seed in zip(names, seeds, strict=True):
        path = folder / f"{name.replace('/', '-')}.pt"
        torch.manual_seed(seed)
        model = build()
        if path.exists():
            model.load_state_dict(torch.load(path, weights_only=True))
            trained[name] = model.eval()
            continue
        trained[name] = train.fit(model, train_set, recipe, seed=seed, adversary=adversary)
        _save(trained[name], path)
    return trained


def _evaluated(nets: dict, test_set, adversary: train.PGD, store: Store) -> None:
    for name, net in nets.items():
        row = memo(store, "models", {"model": name}, lambda net=net: train.evaluate(net, test_set, adversary))
        print(f"  {name}: clean test accuracy {row['clean']:.3f}, adversarial {row['adversarial']:.3f}")


def run(settings: Preset | SyntheticPreset, out: str | Path) -> dict:
    """Train, explain, audit and report; returns the headline numbers."""
    out = Path(out)
    start = time.perf_counter()
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
                _images(settings, out, store, executor)
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
    scheme, _, where = settings.data.partition(":")
    if scheme != "blockmnist":
        options = {"size": settings.size, "test_fraction": settings.test_fraction, "seed": settings.seed,
                   "trust_pickle": settings.trust_pickle}
        return {"random": data.load_splits(settings.data, **options)}
    kwargs = {"digits": settings.digits, "copies": settings.copies, "seed": settings.seed,
              "source": where or settings.source}
    layouts = ("random", "top") if settings.top_layout and not settings.models else ("random",)
    return {layout: (data.blockmnist("train", position=layout, **kwargs), data.blockmnist("test", position=layout,
                                                                                            **kwargs))
            for layout in layouts}


def _user_models(settings: Preset, store: Store) -> tuple[dict[str, torch.nn.Module], dict[str, dict]]:
    """The ``--models`` entries, loaded (weights_only unless ``trust_pickle``), and their "inputs" rows
    (stored once every check has passed). Stored results are keyed by model name, so a run folder
    that holds results for a model of the same name but other weights is refused, not reused."""
    loaded, described = {}, {}
    for entry in parse_models(settings.models):
        loaded[entry.name] = load_model(entry.factory, entry.weights, settings.trust_pickle, "--models")
        digest = hashlib.sha256(Path(entry.weights).read_bytes()).hexdigest()[:12]
        key, row = {"what": f"model {entry.name}"}, {"description": f"{entry.factory} with {entry.weights}",
                                                     "sha256": digest}
        stored = store.get("inputs", key)
        if stored is not None and stored.get("sha256") != digest:
            raise ValueError(f"{store.path.parent} already holds results for model {entry.name!r} from other weights "
                             f"(sha256 {stored.get('sha256')}, now {digest}); use a new --out or another name")
        described[entry.name] = row
    return loaded, described


def _images(settings: Preset, out: Path, store: Store, executor) -> None:
    sets = _datasets(settings)
    train_set, test_set = sets["random"]
    classes = check_classes(train_set.y, test_set.y, settings.data)
    in_shape = tuple(train_set.x.shape[1:])
    for split, part in (("train", train_set), ("test", test_set)):
        store.put("inputs", {"what": f"data {split}"},
                  {"description": f"{len(part)} images {'x'.join(map(str, in_shape))}, {classes} classes "
                                  f"({settings.data})"})
    print(f"data {settings.data}: {len(train_set)} train / {len(test_set)} test images {list(in_shape)}, "
          f"{classes} classes", flush=True)
    attack = train.PGD(**settings.adversary)
    nets = {}
    described = {}
    if settings.models:
        nets[("random", "user")], described = _user_models(settings, store)
    else:
        print(f"training {settings.seeds_per_model} seeds per model", flush=True)

        def build():
            return models.small_cnn(in_shape=in_shape, classes=classes, width=settings.width)

        seeds = [1000 * settings.seed + i for i in range(settings.seeds_per_model)]
        for layout, (layout_train, _) in sets.items():
            suffix = "" if layout == "random" else "-top"
            for kind in ("standard", "robust") if layout == "random" else ("standard",):
                names = [f"{kind}{suffix}/{i}" for i in range(settings.seeds_per_model)]
                nets[(layout, kind)] = _trained(names, build, layout_train, settings.recipe, seeds,
                                                attack if kind == "robust" else None, out / "models",
                                                f"{kind}{suffix}")
                recipe = train.Recipe.of(**settings.recipe).describe(kind == "robust")
                store.put("inputs", {"what": f"models {names[0]} .. {names[-1]}"},
                          {"description": f"small CNN (width {settings.width}) trained here on "
                                          f"{'BlockMNIST-Top' if suffix else settings.data}: {recipe}"
                                          + (f", PGD linf eps {attack.eps:g}" if kind == "robust" else "")})
    methods = named_methods([METHODS[m](settings) for m in settings.methods])
    layered = [m for m in settings.methods if m in LAYER_METHODS]
    for group in nets.values():
        for name, net in group.items():
            check_classifier(net, name, train_set.x, classes)
            if layered:
                check_layer(net, name, settings.layer)
    for name, row in described.items():
        store.put("inputs", {"what": f"model {name}"}, row)
    for (layout, _), group in nets.items():
        _evaluated(group, sets[layout][1], attack, store)

    def retrain_model():
        if settings.retrain or settings.models:
            return build_model(settings.retrain or parse_models(settings.models)[0].factory, "--retrain")
        return models.mlp(in_shape=in_shape, classes=classes, hidden=settings.retrain_hidden)

    retrained = settings.retrain or (parse_models(settings.models)[0].factory if settings.models else
                                     f"MLP (hidden {settings.retrain_hidden})")
    store.put("inputs", {"what": "DiffROAR retrains"},
              {"description": f"{retrained}: {train.Recipe.of(**settings.retrain_recipe).describe()}, "
                              f"fill {settings.fill}"})
    with torch.random.fork_rng():                    # building a model to check it leaves the global RNG alone
        check_classifier(retrain_model(), "retrained by DiffROAR", train_set.x, classes)
    examples = slice(0, 6)
    for (layout, _), group in nets.items():
        if layout != "random":
            continue
        for name, net in group.items():
            if settings.models or name.endswith("/0"):
                maps = {n: m(net, test_set.x[examples], test_set.y[examples]) for n, m in methods.items()}
                method_grid(test_set.x[examples], maps, out / "figures" / f"{name.replace('/', '-')}.png",
                            titles=[f"label {int(v)}" for v in test_set.y[examples]])
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
        net = _trained([kind], build, train_set, recipe, [settings.seed], attack if kind == "robust" else None,
                        out / "models", kind)[kind]
        _evaluated({kind: net}, test_set, attack, store)
        signal_coordinate(None, net, test_set, model_name=kind, store=store)
