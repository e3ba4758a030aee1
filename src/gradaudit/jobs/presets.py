"""Every command's settings: named presets and the checks that run before any work.

``preset`` (``gradaudit audit``: image presets and the synthetic test bed) and ``unlearn_preset``
(``gradaudit unlearn``) return frozen dataclasses; a run folder stores them and answers for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .. import train
from ..engine.checks import check_positive_int
from ..errors import UsageError
from ..unlearn import SCENARIOS
from ..unlearn.saliency import check_threshold
from .registry import check_method_names
from .subjects import parse_models


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

def preset(name: str, **overrides) -> Preset | SyntheticPreset:
    """A named preset with the given settings replaced (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if "methods" in chosen:
        chosen["methods"] = check_method_names(chosen["methods"], "--methods")
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
            try:
                train.Recipe.of(**chosen[recipe])
            except TypeError as err:
                raise UsageError(f"--recipe: {err}") from None
    if "eps" in chosen and isinstance(base, Preset):
        chosen["adversary"] = {**base.adversary, "eps": chosen.pop("eps")}
    return replace(base, **chosen)


@dataclass(frozen=True)
class UnlearnPreset:
    """Every setting of an unlearning run. ``recipe`` trains the originals here, and Retrain takes its
    epochs, lr, momentum, weight decay and batch size (always with SGD, as the authors' retrain);
    ``methods`` holds each unlearner's settings over its defaults. The quick preset's rates
    were chosen on a pilot run (seed 100, not among the reported seeds) for its small CNN on the
    bundled digits: the authors' CIFAR-10 ResNet-18 values (the classes' defaults) overshoot here."""

    data: str = "mnist"
    models: tuple = ()
    test_fraction: float = 0.2
    size: tuple | None = None
    trust_pickle: bool = False
    scenarios: tuple = SCENARIOS
    forget_fraction: float = 0.1
    seeds: int = 5
    threshold: float = 0.5
    width: int = 16
    recipe: dict = field(default_factory=lambda: {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                                  "weight_decay": 5e-4, "epochs": 8, "batch_size": 64})
    methods: dict = field(default_factory=lambda: {
        "FineTune": {"epochs": 3, "lr": 0.05}, "GradientAscent": {"epochs": 3, "lr": 0.005},
        "RandomLabel": {"epochs": 3, "lr": 0.003}, "SalUn": {"epochs": 3, "lr": 0.003},
        "L1Sparse": {"epochs": 3, "lr": 0.05}})
    batch_size: int = 64
    seed: int = 0


UNLEARN_PRESETS = {
    "quick": UnlearnPreset(),
    "tiny": UnlearnPreset(seeds=2, width=4, recipe={"optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                                    "weight_decay": 5e-4, "epochs": 1, "batch_size": 64},
                          methods={name: {"epochs": 1, "lr": lr} for name, lr in
                                   (("FineTune", 0.05), ("GradientAscent", 0.005), ("RandomLabel", 0.003),
                                    ("SalUn", 0.003), ("L1Sparse", 0.05))}),
}


def unlearn_preset(name: str, **overrides) -> UnlearnPreset:
    """A named preset with the given settings replaced (None values are ignored)."""
    if name not in UNLEARN_PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(UNLEARN_PRESETS)}; got {name!r}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if "seeds" in chosen:
        check_positive_int("--seeds", chosen["seeds"])
    if "threshold" in chosen:
        check_threshold(chosen["threshold"])
    if "forget_fraction" in chosen and not 0 < chosen["forget_fraction"] < 1:
        raise ValueError(f"--forget-fraction must be a share in (0, 1); got {chosen['forget_fraction']!r}")
    unknown = [s for s in chosen.get("scenarios", ()) if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"--scenarios {unknown[0]!r} is not one of {', '.join(SCENARIOS)}")
    if "models" in chosen:
        entries = parse_models(chosen["models"])
        if len(entries) != 1:
            raise ValueError(f"--models takes one model to unlearn from (NAME=package.module:factory@weights.pt); "
                             f"got {len(entries)}")
        chosen["models"] = (str(entries[0]),)
    return replace(UNLEARN_PRESETS[name], **chosen)


METRIC_NAMES = ("insertion", "deletion", "infidelity", "sensitivity", "faithfulness", "monotonicity", "pointing",
                "relevance", "road")
LOCALISATION_METRICS = ("pointing", "relevance")


@dataclass(frozen=True)
class EvaluatePreset:
    """Every setting of a ``gradaudit evaluate`` run. ``methods`` are ``METHODS`` names (the Random and
    Sobel controls are always added); ``metrics`` are ``METRIC_NAMES`` (empty: every metric the data
    supports, the localisation metrics only on data with masks); ``images`` is how many test images
    are evaluated. Without ``models`` one small CNN is trained here on the training split with ``recipe``."""

    data: str = "blockmnist"
    models: tuple = ()
    test_fraction: float = 0.2
    size: tuple | None = None
    trust_pickle: bool = False
    digits: tuple = (0, 1)
    copies: int = 2
    source: str | None = None
    width: int = 16
    recipe: dict = field(default_factory=lambda: {"optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 64})
    methods: tuple = ("saliency", "inputxgradient", "smoothgrad", "ig", "gradcam")
    metrics: tuple = ()
    images: int = 200
    samples: int = 8
    steps: int = 16
    layer: str = "auto"
    step: int | None = None
    infidelity_samples: int = 50
    sensitivity_samples: int = 10
    radius: float = 0.02
    faithfulness_samples: int = 50
    road_fractions: tuple = (0.1, 0.3, 0.5)
    resamples: int = 1000
    seed: int = 0


EVALUATE_PRESETS = {
    "quick": EvaluatePreset(),
    "tiny": EvaluatePreset(copies=1, images=12, samples=2, steps=4, infidelity_samples=8, sensitivity_samples=3,
                           faithfulness_samples=8, road_fractions=(0.5,), resamples=100,
                           recipe={"optimizer": "adam", "lr": 1e-3, "epochs": 1, "batch_size": 64},
                           methods=("saliency", "gradcam")),
}


def check_metric_names(names, flag: str = "--metrics") -> tuple[str, ...]:
    """``names`` as a tuple of ``METRIC_NAMES``; otherwise a ValueError naming ``flag`` and the choices."""
    names = tuple(dict.fromkeys(names))
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"{flag}: unknown metric {unknown[0]!r}; choose from {', '.join(METRIC_NAMES)}")
    return names


def evaluate_preset(name: str, **overrides) -> EvaluatePreset:
    """A named ``evaluate`` preset with the given settings replaced (None values are ignored)."""
    if name not in EVALUATE_PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(EVALUATE_PRESETS)}; got {name!r}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if "methods" in chosen:
        chosen["methods"] = check_method_names(chosen["methods"], "--methods")
    if "metrics" in chosen:
        chosen["metrics"] = check_metric_names(chosen["metrics"])
        if not chosen["metrics"]:
            raise ValueError(f"--metrics is empty; choose from {', '.join(METRIC_NAMES)}")
    for setting in ("images", "samples", "steps", "infidelity_samples", "sensitivity_samples"):
        if setting in chosen:
            check_positive_int("--" + setting.replace("_", "-"), chosen[setting])
    if "models" in chosen:
        chosen["models"] = tuple(str(entry) for entry in parse_models(chosen["models"]))
    if "recipe" in chosen:
        chosen["recipe"] = {**EVALUATE_PRESETS[name].recipe, **chosen["recipe"]}
        try:
            train.Recipe.of(**chosen["recipe"])
        except TypeError as err:
            raise UsageError(f"--recipe: {err}") from None
    return replace(EVALUATE_PRESETS[name], **chosen)
