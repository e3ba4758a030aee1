"""``gradaudit unlearn``: SalUn, its controls and the baselines, audited against Retrain over seeds.

For each seed: train the original model on the training split (or load the user's), choose the
forget set (random: ``forget_fraction`` of the training examples, drawn by the seed; class: every
example of one class, a different class per seed), compute the weight-saliency masks once, run
every method and score it (``audit.unlearning``). In class-wise forgetting TA is measured on the
test examples of the remaining classes, and they are the MIA's non-members. Every finished row
goes to ``OUT/results.sqlite`` at once, trained originals to ``OUT/models/``: a re-run resumes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import data, models, train
from ..audit.unlearning import gap_table, unlearning
from ..data.inputs import Examples
from ..report import write_report
from ..report.reading import unlearning_claims
from ..store import Store
from ..unlearn import FineTune, GradientAscent, L1Sparse, RandomLabel, Retrain, SalUn, forget_split, weight_saliency
from .presets import UnlearnPreset
from .runfolder import check_run_folder
from .subjects import check_classes, check_classifier, check_same_weights, trained_models, user_models


def methods_for(settings: UnlearnPreset, masks) -> list:
    """Retrain (the reference), the baselines, SalUn and its two mask controls, with the preset's settings."""
    common = {"batch_size": settings.batch_size}
    recipe = settings.recipe
    own = {name: {**common, **values} for name, values in settings.methods.items()}
    return [Retrain(epochs=recipe["epochs"], lr=recipe["lr"], momentum=recipe.get("momentum", 0.9),
                    weight_decay=recipe.get("weight_decay", 5e-4), batch_size=recipe["batch_size"]),
            FineTune(**own.get("FineTune", common)), GradientAscent(**own.get("GradientAscent", common)),
            RandomLabel(**own.get("RandomLabel", common)), L1Sparse(**own.get("L1Sparse", common)),
            *(SalUn(masks=masks, mask=kind, threshold=settings.threshold, **own.get("SalUn", common))
              for kind in ("salient", "random", "anti-salient"))]


def _original(settings: UnlearnPreset, train_set, classes: int, seed: int, out: Path, user) -> torch.nn.Module:
    """The user's model, or this seed's small CNN trained here (loaded from ``OUT/models/`` on a rerun)."""
    if user is not None:
        return user

    def build():
        return models.small_cnn(in_shape=tuple(train_set.x.shape[1:]), classes=classes, width=settings.width)

    name = f"original-{seed}"
    return trained_models([name], build, train_set, settings.recipe, [seed], None, out / "models", "original")[name]


def run(settings: UnlearnPreset, out: str | Path) -> dict:
    """Train (or load), unlearn, audit and report; returns the summary table and the reading."""
    out = Path(out)
    start = time.perf_counter()
    inputs = _inputs(settings)
    check_run_folder(out, settings)
    store = Store(out / "results.sqlite")
    try:
        store.put("settings", {"run": str(len(store.rows("settings")))},
                  {"settings": asdict(settings), "preset": type(settings).__name__})
        _unlearn(settings, inputs, out, store)
        rows = store.rows("unlearning")
        results = {audit: store.rows(audit) for audit in store.audits()}
    finally:
        store.close()
    report = write_report(out)
    return {"table": gap_table(rows), "lines": [c.sentence for c in unlearning_claims(rows)],
            "seconds": time.perf_counter() - start, "report": str(report.resolve()), "results": results}


@dataclass(frozen=True)
class _Inputs:
    """What a run works on, read and checked before its run folder is compared or touched: the splits, the
    number of classes, and the user's model (None: one trained here per seed) with its "inputs" row."""

    train: data.ImageData
    test: data.ImageData
    classes: int
    user: torch.nn.Module | None
    described: dict[str, dict]


def _inputs(settings: UnlearnPreset) -> _Inputs:
    """Read the data and the user's model and check that they fit each other: every input error comes first."""
    options = {"size": settings.size, "test_fraction": settings.test_fraction, "seed": settings.seed,
               "trust_pickle": settings.trust_pickle}
    train_set, test_set = data.load_splits(settings.data, **options)
    classes = check_classes(train_set.y, test_set.y, settings.data)
    if not settings.models:
        return _Inputs(train_set, test_set, classes, None, {})
    loaded, described = user_models(settings.models, settings.trust_pickle)
    (name, user), = loaded.items()
    check_classifier(user, name, train_set.x, classes)
    return _Inputs(train_set, test_set, classes, user, described)


def _unlearn(settings: UnlearnPreset, inputs: _Inputs, out: Path, store: Store) -> None:
    train_set, test_set, classes, user, described = (inputs.train, inputs.test, inputs.classes, inputs.user,
                                                      inputs.described)
    print(f"data {settings.data}: {train_set.describe()}; test {len(test_set)}", flush=True)
    store.put("inputs", {"what": "data"}, {"description": f"{train_set.describe()}; {len(test_set)} test images"})
    if settings.models:
        check_same_weights(described, store)
        name, = described
        store.put("inputs", {"what": f"model {name}"}, described[name])
    else:
        store.put("inputs", {"what": "originals"},
                  {"description": f"small CNN (width {settings.width}) trained here on the training split, one per "
                                  f"seed: {train.Recipe.of(**settings.recipe).describe()}"})
    present = sorted(set(train_set.y.tolist()))
    for number in range(settings.seeds):
        seed = 1000 * settings.seed + number
        original = _original(settings, train_set, classes, seed, out, user)
        for scenario in settings.scenarios:
            if scenario == "random":
                split, test = forget_split(train_set, fraction=settings.forget_fraction, seed=seed), test_set
            else:
                forgotten = present[number % len(present)]
                split = forget_split(train_set, classes=forgotten)
                kept = test_set.y != forgotten
                test = Examples(test_set.x[kept], test_set.y[kept])
            key = {"model": f"{scenario}/{seed}", "scenario": scenario, "seed": seed}
            masks = weight_saliency(original, split.forget, settings.threshold)
            for row in masks.summary():
                store.put("weight_saliency", {**key, "parameter": row["parameter"]}, row)
            unlearning(methods_for(settings, masks), original, split.forget, split.retain, test, seeds=(seed,),
                       scenario=scenario, model_name=key["model"], store=store)


def print_summary(numbers: dict) -> None:
    """``run``'s table and reading, as ``gradaudit unlearn`` prints them."""
    print("\nmeans over seeds with 95% intervals; gap = mean |metric - Retrain's| over UA, RA, TA, MIA:")
    for row in numbers["table"]:
        gap = row["gap"].text() if "gap" in row else "(reference)"
        print(f"  {row['scenario']:>6} {row['method']:26} UA {row['UA'].mean:.3f}  RA {row['RA'].mean:.3f}  "
              f"TA {row['TA'].mean:.3f}  MIA {row['MIA'].mean:.3f}  gap {gap}")
    for line in numbers["lines"]:
        print(f"  - {line}")
    print(f"finished in {numbers['seconds']:.0f}s; report: {numbers['report']}")
