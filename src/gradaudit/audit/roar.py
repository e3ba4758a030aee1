"""ROAR / DiffROAR (Shah et al. 2021): retrain on the pixels an attribution ranks first vs last.

For a method and a level k (the fraction of pixels kept), every train and test image keeps
either its top-k or its bottom-k pixels by |attribution| (the rest removed: a constant or
ROAD's noisy linear imputation), a fresh model is trained on each masked training set and
tested on the identically masked test set, and DiffROAR(k) = accuracy(top-k kept) -
accuracy(bottom-k kept). Positive: the method ranks discriminative pixels first; near 0: no
better than ``Random``; negative: the ranking is inverted. All the models one method needs
(fractions x top/bottom x repeats) are trained together as one vectorised ensemble.

Three things keep the numbers honest:
- a cell whose top and bottom accuracies are both within 1% of the ceiling (the accuracy of
  the same model retrained on unmasked data) or both within 1% of chance cannot rank
  anything: it is marked ``saturated`` and left out of verdicts;
- a map with many exactly equal values (IG and NormGrad are 0 on black pixels) is ranked with
  ties broken at random (seeded); the share of tied pixels is reported with each cell;
- ``leak_check`` trains the same model on the keep-masks alone: when the mask's shape already
  tells the class, a constant fill leaks it (ROAD's point), whatever the pixels say.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.inputs import as_examples
from ..keys import fingerprint
from ..store import Store
from ..train import Recipe, ensemble_accuracy, fit_ensemble
from ..units import LocalExecutor, Unit
from .common import call_arguments, importance, keep_masks, memo, named_methods, rank_pixels, stored
from .imputation import noisy_linear_impute
from .results import AuditResult

SATURATION_MARGIN = 0.01
TIE_BREAK = "random (seeded)"


def blurred(maps: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian-blurred maps [N, H, W]: the smoothness control of Song et al. (2023)."""
    radius = int(3 * sigma)
    grid = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-grid**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = maps.unsqueeze(1)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out.squeeze(1)


def tied_share(maps: Tensor) -> float:
    """Mean over maps [N, ...] of the share of pixels whose value another pixel of the map shares."""
    shares = []
    for row in maps.flatten(1):
        _, counts = torch.unique(row, return_counts=True)
        shares.append(counts[counts > 1].sum().item() / row.numel())
    return sum(shares) / len(shares)


def saturated(top: float, bottom: float, ceiling: float, chance: float, margin: float = SATURATION_MARGIN) -> bool:
    """Both accuracies within ``margin`` of the ceiling, or both within ``margin`` of chance."""
    return (min(top, bottom) >= ceiling - margin) or (max(top, bottom) <= chance + margin)


def _filled(x: Tensor, masks, ks: list[float], split: int, fill, seed: int) -> Tensor | float:
    """What removed pixels become for the masks of levels ``ks`` (top and bottom each, as ``masks``
    orders them): a number, or ROAD imputations [2 * len(ks), N, ...], imputed once per distinct
    level (repeats share their masks)."""
    if fill != "road":
        return fill
    levels = sorted(set(ks))
    imputed = torch.stack([noisy_linear_impute(x, ~k, seed=seed + m) for m, k in enumerate(masks(split, levels))])
    rows = [2 * levels.index(k) + bottom for k in ks for bottom in (0, 1)]
    return imputed[rows]


def _per_input(masks: Tensor, x: Tensor) -> Tensor:
    """Pixel masks [K, N, P] as [K, *x.shape]: one value per input element, or for images x
    [N, C, H, W] with P = H * W, the same mask on every channel (an expanded view, no copy)."""
    if masks.shape[2] == x[0].numel():
        return masks.view(-1, *x.shape)
    return masks.view(len(masks), len(x), 1, *x.shape[2:]).expand(-1, *x.shape)


def _fill_value(fill, train_x: Tensor):
    if fill == "mean":
        return train_x.mean().item()
    if fill == "road":
        return "road"
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise ValueError(f"fill must be 'mean', 'road' or a number; got {fill!r}")
    return float(fill)


def diffroar(methods, model: nn.Module, train, test, *, model_fn: Callable[[], nn.Module],
             fractions=(0.1, 0.2, 0.3, 0.4, 0.5), repeats: int = 2, recipe: Recipe | None = None,
             fill: float | str = "mean", blur_control: bool = False, leak_check: bool = False, seed: int = 0,
             model_name: str = "model", store: Store | None = None, progress: bool = True,
             executor=None, **settings) -> AuditResult:
    """DiffROAR of each method's maps of ``model`` on ``train``/``test`` (datasets with .x, .y).

    model_fn: builds the fresh model retrained on each masked dataset.
    fractions: the levels k (fraction of pixels kept). repeats: retraining seeds per cell.
    recipe / settings: the retraining recipe (``train.Recipe`` or its fields: epochs, lr, ...;
        default Adam, lr 1e-3, 3 epochs, batch 64).
    fill: removed pixels become "mean" (the training mean, as the authors' code), a number
        (on MNIST use the background, 0: a mean fill draws removed strokes in grey), or "road"
        (ROAD's noisy linear imputation, so the mask's shape stops telling the class).
    blur_control: also score each method's Gaussian-blurred maps (name + "+blur"): when the
        blurred map scores higher, the score comes from smoothness, not from the model.
    leak_check: also train ``model_fn`` on the keep-masks alone (one per cell and top/bottom);
        rows in the ``diffroar_leak`` audit.
    executor: where the retraining ensembles run (``units.LocalExecutor`` by default, or ``jobs.executor``'s Ray);
        the rows are the same, and this process alone writes them to ``store``.
    Rows: one per (method, fraction, repeat) with top/bottom accuracy, diffroar, ``saturated``,
    ``ceiling``, ``chance``, ``tied_share`` and ``tie_break``.
    """
    # A cell's numbers depend on its fraction's position in ``fractions`` (its seed), so cells key that index;
    # blur_control and leak_check add units without changing any other unit's numbers.
    call = call_arguments(locals(), units=("fractions", "blur_control", "leak_check"))
    recipe = Recipe.of(recipe, **settings)
    train, test = as_examples(train, "train"), as_examples(test, "test")
    fill = _fill_value(fill, train.x)
    classes = int(max(train.y.max(), test.y.max())) + 1
    chance = 1.0 / classes
    ceiling = _ceiling(model_fn, train, test, recipe, repeats, seed, model_name, call, store)
    executor = executor or LocalExecutor()
    shared_data = None
    leaks, units, cells_of, finished, computed, described = [], [], {}, {}, {}, {}

    def cell(variant: str, k: float, r: int | None = None) -> tuple[dict, dict]:
        """The (label, arguments) of a DiffROAR cell (``r``) or of a mask-leak row (``r`` None)."""
        label = {"model": model_name, "method": variant, "fraction": k} | ({} if r is None else {"repeat": r})
        return label, {"call": call, "method": described[variant], "index": list(fractions).index(k)}

    def write(unit: Unit, results: dict) -> None:
        """Store a finished unit's cells at once (the driver alone writes)."""
        variant, ties = finished[unit.name]
        for (k, r), (top_acc, bottom_acc) in results.items():
            row = {"top_accuracy": top_acc, "bottom_accuracy": bottom_acc, "diffroar": top_acc - bottom_acc,
                   "saturated": saturated(top_acc, bottom_acc, ceiling, chance), "ceiling": ceiling,
                   "chance": chance, "tied_share": ties, "tie_break": TIE_BREAK, "fill": str(fill)}
            computed[(variant, k, r)] = memo(store, "diffroar", *cell(variant, k, r), lambda row=row: row)

    for name, method in named_methods(methods).items():
        variants = {name: None} | ({f"{name}+blur": blurred} if blur_control else {})
        maps = None
        for variant, transform in variants.items():
            described[variant] = fingerprint({"method": method, "blurred": transform is not None}, variant)
            cells_of[variant] = [(k, r) for k in fractions for r in range(repeats)]
            todo = [(k, r) for k, r in cells_of[variant] if stored(store, "diffroar", *cell(variant, k, r)) is None]
            leak_todo = [k for k in fractions
                         if leak_check and stored(store, "diffroar_leak", *cell(variant, k)) is None]
            if todo or leak_todo:
                if maps is None:
                    maps = [importance(method, model, d.x, d.y, desc=f"{name} maps") for d in (train, test)]
                scored = [transform(m) if transform else m for m in maps]
                ties = tied_share(scored[1])
                ranks = [rank_pixels(m, seed) for m in scored]
                if todo:
                    if shared_data is None:
                        shared_data = executor.share((train, test), pins=(train.x, train.y, test.x, test.y))
                    shared_ranks = executor.share(ranks)
                    mine = [Unit(f"{variant} ({model_name}) cells {part}", _retrain_cells,
                                 (model_fn, shared_data, shared_ranks, part, fractions, fill, recipe, seed,
                                  f"{variant} ({model_name})", progress and executor.name == "local"))
                            for part in _slices(todo, executor.workers)]
                    finished.update({unit.name: (variant, ties) for unit in mine})
                    if executor.workers == 1:
                        executor.run(mine, write)            # one at a time: this map's ranks are freed next
                    else:
                        units += mine
                if leak_todo:
                    leaks += _leak(model_fn, train, test, _mask_maker(ranks, train, test), leak_todo, fractions,
                                   recipe, seed, lambda k, v=variant: cell(v, k), store)
            if leak_check and store is not None:
                leaks += [stored(store, "diffroar_leak", *cell(variant, k)) for k in fractions if k not in leak_todo]
    if units:
        if progress:
            print(f"  {len(units)} retraining units on {executor.workers} {executor.name} workers", flush=True)
        executor.run(units, write)
    rows = [computed.get((variant, k, r)) or stored(store, "diffroar", *cell(variant, k, r))
            for variant, cells in cells_of.items() for k, r in cells]
    return AuditResult("diffroar", rows, {"leak": leaks})


def _slices(cells: list, workers: int) -> list[list]:
    """``cells`` in up to ``workers`` contiguous slices (one slice for a single worker)."""
    count = max(1, min(workers, len(cells)))
    size = -(-len(cells) // count)
    return [cells[i:i + size] for i in range(0, len(cells), size)]


def _mask_maker(ranks: list[Tensor], train, test):
    """masks(split, ks) -> keep-masks [2 len(ks), *x.shape] (top and bottom for each k) of that split."""
    def masks(split, ks):
        return _per_input(torch.stack([keep_masks(ranks[split], k, top) for k in ks for top in (True, False)]),
                          (train if split == 0 else test).x)

    return masks


def _retrain_cells(model_fn, data, ranks, todo, fractions, fill, recipe, seed, label, progress) -> dict:
    """One unit of work (any executor): retrain the cells ``todo`` of one map's ranks as one ensemble."""
    train, test = data
    return _retrain(model_fn, train, test, _mask_maker(ranks, train, test), todo, fractions, fill, recipe, seed,
                    label, progress)


def _ceiling(model_fn, train, test, recipe, repeats, seed, model_name, call, store) -> float:
    """Mean test accuracy of ``model_fn`` retrained on unmasked data over ``repeats`` seeds (stored, keyed by
    the DiffROAR ``call``)."""
    def compute():
        trained = fit_ensemble(model_fn, train.x, train.y, None, 0.0, [seed + 7919 + r for r in range(repeats)],
                               recipe, progress=False)
        return {"accuracy": ensemble_accuracy(trained, test.x, test.y).mean().item()}

    return memo(store, "diffroar_ceiling", {"model": model_name, "repeats": repeats}, {"call": call},
                compute)["accuracy"]


def _retrain(model_fn, train, test, masks, todo, fractions, fill, recipe, seed, label, progress) -> dict:
    """{(k, r): (top accuracy, bottom accuracy)} for the cells ``todo``, trained as one ensemble."""
    ks = [k for k, _ in todo]
    keep = {"train": masks(0, ks), "test": masks(1, ks)}
    # A cell's seed depends on the cell alone, so a resumed run trains what a fresh one would.
    seeds = [seed + 1000 * r + 10 * list(fractions).index(k) + top for k, r in todo for top in (0, 1)]
    if progress:
        print(f"  retraining {len(seeds)} models for {label} as one ensemble", flush=True)
    filled = {name: _filled(d.x, masks, ks, split, fill, seed)
              for split, (name, d) in enumerate((("train", train), ("test", test)))}
    trained = fit_ensemble(model_fn, train.x, train.y, keep["train"], filled["train"], seeds, recipe,
                           progress=progress)
    accuracy = ensemble_accuracy(trained, test.x, test.y, keep["test"], filled["test"])
    return {cell: (accuracy[2 * j].item(), accuracy[2 * j + 1].item()) for j, cell in enumerate(todo)}


def mask_leak(model_fn: Callable[[], nn.Module], keep_train: Tensor, y_train: Tensor, keep_test: Tensor,
              y_test: Tensor, seeds: list[int], recipe: Recipe | None = None, **settings) -> Tensor:
    """Test accuracy [M] of ``model_fn`` trained on the masks alone: model m sees ``keep_train[m]``
    [N, ...] (1 = kept, 0 = removed) with labels ``y_train`` and is tested on ``keep_test[m]``.

    Near chance: the mask's shape says nothing about the class. High: a constant fill leaks the
    class through the mask, whatever the kept pixels show (Rong et al. 2022).
    """
    ones_train = torch.ones(keep_train.shape[1:], dtype=torch.get_default_dtype())
    ones_test = torch.ones(keep_test.shape[1:], dtype=torch.get_default_dtype())
    trained = fit_ensemble(model_fn, ones_train, y_train, keep_train, 0.0, seeds, recipe, progress=False, **settings)
    return ensemble_accuracy(trained, ones_test, y_test, keep_test, 0.0)


def _leak(model_fn, train, test, masks, ks, fractions, recipe, seed, cell, store) -> list[dict]:
    """Mask-leak rows per k of ``ks``: the accuracy of a model that sees only the top-k or only the bottom-k
    mask; a row's seeds follow k's position in ``fractions`` (so a resumed run trains what a fresh one would),
    ``cell(k)`` gives its (label, arguments)."""
    seeds = [seed + 500 + 10 * list(fractions).index(k) + top for k in ks for top in (0, 1)]
    accuracy = mask_leak(model_fn, masks(0, ks), train.y, masks(1, ks), test.y, seeds, recipe)
    rows = []
    for i, k in enumerate(ks):
        row = {"top_mask_accuracy": accuracy[2 * i].item(), "bottom_mask_accuracy": accuracy[2 * i + 1].item()}
        rows.append(memo(store, "diffroar_leak", *cell(k), lambda row=row: row))
    return rows
