"""``gradaudit influence``: which training examples made each prediction, and whether to believe the scores.

The user's model (``--model package.module:factory@weights.pt``, trained on the --data training split), or a
small CNN trained here on it, is fitted once with the chosen strategy (factors saved to ``OUT/factors`` and
reused on a rerun); with ``--ensemble K`` K - 1 more models of the same kind are trained with other seeds, one
unit each on the executor (local or Ray; each saved to ``OUT/models`` as it finishes, skipped on a rerun), and
the strategy scores their ensemble (``influence.fit([m1, ..., mK])``). Every query (``queries`` test examples
drawn across classes, seeded) is scored against every attributed training example (``OUT/scores.pt``), and its
strongest proponents and opponents are stored with their images. With ``lds`` the scores are checked against
retraining on random alpha-subsets (``audit.lds``, ``lds_seeds`` models per subset); with ``brittleness`` by
removing each correct query's top proponents and retraining (``audit.brittleness``); with ``mislabel`` by
finding flipped labels through self-influence (``audit.mislabel_detection``); all against the ``random`` and
``identity`` controls. Every finished row goes to ``OUT/results.sqlite`` at once: a rerun (even after kill -9)
resumes.
"""

from __future__ import annotations

import base64
import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import data, influence, models, train
from ..audit.brittleness import brittleness
from ..audit.influence_checks import lds, mislabel_detection, paired, verdicts
from ..data.inputs import Examples
from ..loading import build_model
from ..report import write_report
from ..store import Store
from ..units import Unit
from .executor import make_executor
from .presets import InfluencePreset
from .runfolder import check_run_folder
from .subjects import (
    check_classes,
    check_classifier,
    check_count,
    check_same_weights,
    parse_model,
    save_model,
    trained_models,
    user_models,
)


def run(settings: InfluencePreset, out: str | Path) -> dict:
    """Train or load the model, fit, score, check and report; returns {"results", "lines", "seconds", "report"}."""
    out = Path(out)
    start = time.perf_counter()
    inputs = _inputs(settings)
    check_run_folder(out, settings)
    executor = make_executor(settings.executor, settings.ray_address, settings.cpus_per_task, settings.gpus_per_task)
    try:
        store = Store(out / "results.sqlite")
        try:
            store.put("settings", {"run": str(len(store.rows("settings")))},
                      {"settings": asdict(settings), "preset": type(settings).__name__})
            _influence(settings, inputs, out, store, executor)
            results = {audit: store.rows(audit) for audit in store.audits()}
        finally:
            store.close()
    finally:
        executor.close()
    report = write_report(out)
    return {"results": results, "lines": verdicts(results), "seconds": time.perf_counter() - start,
            "report": str(report.resolve())}


def _attributed(settings: InfluencePreset, train_set) -> Examples:
    """The training examples attributed: a seeded sample of ``train_examples`` (all when None or more)."""
    count = settings.train_examples
    if count is None or count >= len(train_set):
        return Examples(train_set.x, train_set.y)
    chosen = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(settings.seed))[:count]
    chosen = chosen.sort().values
    return Examples(train_set.x[chosen], train_set.y[chosen])


def _builder(settings: InfluencePreset, shape: tuple, classes: int):
    """The factory of fresh models (LDS and mislabel retraining): the user's, or the small CNN."""
    if settings.model:
        factory = parse_model(settings.model)[0]
        return lambda: build_model(factory, "--model")
    return lambda: models.small_cnn(in_shape=shape, classes=classes, width=settings.width)


def _model(settings: InfluencePreset, inputs: _Inputs, build, out: Path, store: Store):
    """(name, model): the user's model, or a small CNN trained here on the attributed examples."""
    if settings.model:
        check_same_weights(inputs.described, store)
        store.put("inputs", {"what": "model model"}, inputs.described["model"])
        return "model", inputs.user
    net = trained_models(["cnn"], build, inputs.attributed, settings.recipe, [1000 * settings.seed], None,
                         out / "models", "cnn")["cnn"]
    store.put("inputs", {"what": "model cnn"},
              {"description": f"small CNN (width {settings.width}) trained here on the attributed examples: "
                              f"{train.Recipe.of(**settings.recipe).describe()}"})
    return "cnn", net


def train_member(build, shared, recipe: dict, seed: int) -> dict:
    """One unit of work (any executor): a fresh model from ``build`` trained with ``seed`` on the shared (x, y);
    its state dict."""
    torch.manual_seed(seed)
    return train.fit(build(), shared, train.Recipe.of(**recipe), seed=seed, progress=False).state_dict()


def _ensemble(settings: InfluencePreset, first, build, attributed: Examples, out: Path, executor) -> list:
    """[first, member 1, ..., member K-1]: member i is ``build()`` trained with seed 1000 x seed + i, read from
    ``OUT/models/member-i.pt`` when a run saved it, else trained as one unit on ``executor`` and saved as it
    arrives (a killed run keeps the finished members)."""
    paths = {i: out / "models" / f"member-{i}.pt" for i in range(1, settings.ensemble)}
    todo = [i for i, path in paths.items() if not path.is_file()]
    if todo:
        shared = executor.share((attributed.x, attributed.y), pins=(attributed.x, attributed.y))
        units = {f"ensemble member {i}": Unit(f"ensemble member {i}", train_member,
                                              (build, shared, settings.recipe, 1000 * settings.seed + i))
                 for i in todo}
        where = {f"ensemble member {i}": paths[i] for i in todo}
        print(f"ensemble: training {len(todo)} more models with other seeds ({executor.name}, "
              f"{executor.workers} workers)", flush=True)
        executor.run(list(units.values()), lambda unit, state: save_model(_loaded(build, state), where[unit.name]))
    return [first, *(_loaded(build, torch.load(path, weights_only=True)) for path in paths.values())]


def _loaded(build, state: dict):
    model = build()
    model.load_state_dict(state)
    return model.eval()


def _fitted(settings: InfluencePreset, model, attributed: Examples, out: Path):
    """The fitted influence of ``model`` (one, or a list: the ensemble): read from ``OUT/factors`` when a run
    saved it, else fitted and saved there."""
    folder = out / "factors"
    if (folder / "settings.json").is_file():
        print(f"influence: factors read from {folder}", flush=True)
        return influence.load(folder, model)
    began = time.perf_counter()
    fitted = influence.fit(model, attributed, strategy=settings.strategy, damping=settings.damping, seed=settings.seed,
                           **_fit_options(settings))
    fitted.save(folder)
    print(f"influence: {settings.strategy} fitted on {len(attributed)} examples in {time.perf_counter() - began:.0f}s",
          flush=True)
    return fitted


def _fit_options(settings: InfluencePreset) -> dict:
    """``influence.fit``'s strategy-specific options: TRAK's projection, or the others' Fisher."""
    return {"projection": settings.projection} if settings.strategy == "trak" else {"fisher": settings.fisher}


def _scores(fitted, queries: Examples, attributed: Examples, out: Path) -> torch.Tensor:
    """Scores [Q, N] from ``OUT/scores.pt``, or computed and saved there (through a temporary file)."""
    path = out / "scores.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    scores = fitted.scores(queries, attributed).detach().cpu()
    partial = path.with_suffix(".tmp")
    torch.save(scores, partial)
    os.replace(partial, path)
    return scores


def thumbnail(image: torch.Tensor, size: int = 56) -> str:
    """A base64 PNG of one image [C, H, W] in [0, 1] (grey for one channel, RGB for three), enlarged to about
    ``size`` pixels with nearest-neighbour pixels."""
    from PIL import Image

    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    picture = Image.fromarray(pixels[0].numpy() if len(pixels) != 3 else pixels.permute(1, 2, 0).numpy())
    scale = max(1, size // max(pixels.shape[1:]))
    picture = picture.resize((pixels.shape[2] * scale, pixels.shape[1] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _examples_row(indices, values, attributed: Examples, names) -> list[dict]:
    return [{"index": int(i), "label": int(attributed.y[i]), "label_name": names(int(attributed.y[i])),
             "score": float(s), "image": thumbnail(attributed.x[i])} for i, s in zip(indices, values, strict=True)]


def _store_top(settings: InfluencePreset, name: str, model, scores, queries: Examples, attributed: Examples,
               classes_named, store: Store) -> None:
    """One "influence_top" row per query: its image, label, prediction and loss, and its top proponents and
    opponents (index into the attributed examples, label, score, image)."""
    found = influence.top(scores, settings.top)
    with torch.no_grad():           # an ensemble predicts with its members' mean softmax
        logits = torch.stack([m(queries.x).log_softmax(1) for m in model]).exp().mean(0).log()
    losses = torch.nn.functional.nll_loss(logits, queries.y, reduction="none")

    def names(label: int) -> str:
        return classes_named[label] if classes_named and label < len(classes_named) else str(label)

    for q in range(len(queries)):
        row = {"label": int(queries.y[q]), "label_name": names(int(queries.y[q])),
               "predicted": int(logits[q].argmax()), "predicted_name": names(int(logits[q].argmax())),
               "loss": float(losses[q]), "image": thumbnail(queries.x[q]), "strategy": settings.strategy,
               "train_examples": len(attributed),
               "proponents": _examples_row(found.proponents[q], found.proponent_scores[q], attributed, names),
               "opponents": _examples_row(found.opponents[q], found.opponent_scores[q], attributed, names)}
        store.put("influence_top", {"model": name, "query": q}, row)


@dataclass(frozen=True)
class _Inputs:
    """What a run works on, read and checked before its run folder is compared or touched: the splits, the
    number of classes, the attributed examples, the queries, and the user's model (None: one trained here)
    with its "inputs" row."""

    train: data.ImageData
    test: data.ImageData
    classes: int
    attributed: Examples
    queries: Examples
    user: torch.nn.Module | None
    described: dict[str, dict]


def _inputs(settings: InfluencePreset) -> _Inputs:
    """Read the data and the user's model and check that they fit each other and the queries asked for:
    every input error comes first."""
    train_set, test_set = data.load_splits(settings.data, size=settings.size, test_fraction=settings.test_fraction,
                                           seed=settings.seed, trust_pickle=settings.trust_pickle)
    classes = check_classes(train_set.y, test_set.y, settings.data)
    check_count("--queries", settings.queries, len(test_set), "test examples", settings.data)
    attributed = _attributed(settings, train_set)
    chosen = across_classes(test_set.y, settings.queries, settings.seed)
    queries = Examples(test_set.x[chosen], test_set.y[chosen])
    if not settings.model:
        return _Inputs(train_set, test_set, classes, attributed, queries, None, {})
    loaded, described = user_models([f"model={settings.model}"], settings.trust_pickle)
    check_classifier(loaded["model"], "model", attributed.x, classes)
    return _Inputs(train_set, test_set, classes, attributed, queries, loaded["model"], described)


def across_classes(y: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Indices [count] of ``count`` examples drawn across the classes of ``y`` [N]: a seeded shuffle, then one
    example of each class in turn (classes in order) until ``count`` are drawn; a class that runs out is
    skipped. Sorted, so the queries keep the split's order."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    by_class = [order[y[order] == c].tolist() for c in torch.unique(y).tolist()]
    chosen, turn = [], 0
    while len(chosen) < count:
        for members in by_class:
            if turn < len(members) and len(chosen) < count:
                chosen.append(members[turn])
        turn += 1
    return torch.tensor(sorted(chosen), dtype=torch.long)


def _influence(settings: InfluencePreset, inputs: _Inputs, out: Path, store: Store, executor) -> None:
    train_set, test_set, classes = inputs.train, inputs.test, inputs.classes
    attributed, queries = inputs.attributed, inputs.queries
    store.put("inputs", {"what": "data"},
              {"description": f"{len(attributed)} of {len(train_set)} training examples attributed, {len(queries)} "
                              f"test examples drawn across classes as queries (labels "
                              f"{sorted(set(queries.y.tolist()))}) {list(test_set.x.shape[1:])}, {classes} classes "
                              f"({settings.data})"})
    build = _builder(settings, tuple(train_set.x.shape[1:]), classes)
    name, first = _model(settings, inputs, build, out, store)
    members = _ensemble(settings, first, build, attributed, out, executor)
    if len(members) > 1:
        store.put("inputs", {"what": "ensemble"},
                  {"description": f"an ensemble of {len(members)} models: {name} and {len(members) - 1} more of its "
                                  f"kind trained here with seeds 1000 x seed + 1 ... (scores: the strategy's "
                                  f"ensemble estimator)"})
    model = members if len(members) > 1 else first
    fitted = _fitted(settings, model, attributed, out)
    scores = _scores(fitted, queries, attributed, out)
    if len(store.rows("influence_top")) < len(queries):
        _store_top(settings, name, members, scores, queries, attributed, getattr(train_set, "classes", None), store)
    recipe = train.Recipe.of(**settings.recipe)
    fit_options = {"projection": settings.projection} if settings.strategy == "trak" else None
    common = {"damping": settings.damping, "fisher": settings.fisher, "model_name": name, "store": store}
    strategies = {settings.strategy: scores}
    if settings.lds:
        print(f"LDS: {settings.lds} subsets of {settings.alpha:g} x {len(attributed)} examples, {settings.lds_seeds} "
              f"models each", flush=True)
        lds(model, attributed, queries, strategies, model_fn=build, subsets_count=settings.lds, alpha=settings.alpha,
            lds_seeds=settings.lds_seeds, recipe=recipe, seed=settings.seed, executor=executor,
            fit_options=fit_options, **common)
    if settings.brittleness:
        print(f"brittleness: top proponents removed ({', '.join(map(str, settings.brittleness_ks))}), "
              f"{settings.lds_seeds} models per removal", flush=True)
        brittleness(model, attributed, queries, strategies, model_fn=build, ks=settings.brittleness_ks,
                    retrain_seeds=settings.lds_seeds, recipe=recipe, seed=settings.seed, executor=executor,
                    fit_options=fit_options, **common)
    if settings.mislabel:
        print(f"mislabel detection: {settings.mislabel:.0%} of the labels flipped, {settings.mislabel_seeds} seeds",
              flush=True)
        mislabel_detection(attributed, (settings.strategy,), model_fn=build, fraction=settings.mislabel,
                           seeds=tuple(1000 * settings.seed + i for i in range(settings.mislabel_seeds)),
                           recipe=recipe, **common)


def print_summary(numbers: dict) -> None:
    """The checks' numbers and verdicts, as ``gradaudit influence`` prints them."""
    results = numbers["results"]
    for row in results.get("lds", []):
        print(f"  LDS {row['method']:10} {row['lds']:+.3f} [{row['lds_low']:+.3f}, {row['lds_high']:+.3f}] "
              f"over {row['queries']} queries")
    for row in results.get("lds", []):
        lead = paired(results["lds"], "lds", row["method"], "identity") if row["method"] != "identity" else None
        if lead is not None:
            print(f"  LDS {row['method']} minus identity (paired over queries): {lead.text(signed=True)}")
    for row in results.get("brittleness", []):
        print(f"  brittleness {row['method']:10} smallest k {row['smallest_k']:.1f} [{row['smallest_k_low']:.1f}, "
              f"{row['smallest_k_high']:.1f}], {row['flipped']:.0%} of {row['queries']} correct queries flipped")
    for row in results.get("mislabel_detection", []):
        print(f"  mislabel {row['method']:10} seed {row['seed']}: {row['found_10']:.0%} of {row['flipped']} flips in "
              f"the top 10% (random {row['random_rate_10']:.0%}), {row['found_20']:.0%} in the top 20%")
    for line in numbers["lines"]:
        print(f"  - {line}")
    print(f"finished in {numbers['seconds']:.0f}s; report: {numbers['report']}")
