"""ROAR / DiffROAR (Shah et al. 2021): retrain on the pixels an attribution ranks first vs last.

For a method and a level k (the fraction of pixels kept), every train and test image keeps
either its top-k or its bottom-k pixels by |attribution| (the rest set to the training mean),
a fresh model is trained on each masked training set and tested on the identically masked test
set, and DiffROAR(k) = accuracy(top-k kept) - accuracy(bottom-k kept). Positive: the method
ranks discriminative pixels first; near 0: no better than ``Random``; negative: the ranking is
inverted. All the models one method needs (fractions x top/bottom x repeats) are trained
together as one vectorised ensemble.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..store import Store
from ..train import ensemble_accuracy, fit_ensemble
from .common import importance, keep_masks, memo, named_methods, rank_pixels
from .results import AuditResult


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


def diffroar(methods, model: nn.Module, train, test, *, model_fn: Callable[[], nn.Module],
             fractions=(0.1, 0.2, 0.3, 0.4, 0.5), repeats: int = 2, epochs: int = 4, lr: float = 1e-3,
             batch_size: int = 64, fill: float | str = "mean", blur_control: bool = False, seed: int = 0,
             model_name: str = "model",
             store: Store | None = None, progress: bool = True) -> AuditResult:
    """DiffROAR of each method's maps of ``model`` on ``train``/``test`` (datasets with .x, .y).

    model_fn: builds the fresh model retrained on each masked dataset.
    fractions: the levels k (fraction of pixels kept). repeats: retraining seeds per cell.
    fill: the value of removed pixels: "mean" (the training mean, as the authors' code) or a
        number. On data with a constant background (MNIST: 0) use the background value: a mean
        fill draws the removed strokes in grey, so keeping only the background still shows the
        digit's silhouette and bottom-k accuracy stays high whatever the attribution.
    blur_control: also score each method's Gaussian-blurred maps (name + "+blur"): when the
        blurred map scores higher, the score comes from smoothness, not from the model.
    """
    fill = train.x.mean().item() if fill == "mean" else float(fill)
    rows = []
    for name, method in named_methods(methods).items():
        variants = {name: None} | ({f"{name}+blur": blurred} if blur_control else {})
        maps = None
        for variant, transform in variants.items():
            cells = [(k, r) for k in fractions for r in range(repeats)]
            def settings(k, r):
                return {"model": model_name, "method": variant, "fraction": k, "repeat": r}

            todo = [(k, r) for k, r in cells if store is None or store.get("diffroar", settings(k, r)) is None]
            results = {}
            if todo:
                if maps is None:
                    maps = [importance(method, model, d.x, d.y, desc=f"{name} maps") for d in (train, test)]
                scored = [transform(m) if transform else m for m in maps]
                ranks = [rank_pixels(m, seed) for m in scored]
                keep = {split: torch.stack([keep_masks(ranks[i], k, top) for k, r in todo for top in (True, False)])
                        for i, split in enumerate(("train", "test"))}
                shape = train.x.shape
                # A cell's seed depends on the cell alone, so a resumed run trains what a fresh one would.
                seeds = [seed + 1000 * r + 10 * list(fractions).index(k) + top for k, r in todo for top in (0, 1)]
                if progress:
                    print(f"  retraining {len(seeds)} models for {variant} ({model_name}) as one ensemble", flush=True)
                trained = fit_ensemble(model_fn, train.x, train.y, keep["train"].view(-1, *shape), fill, seeds,
                                       epochs=epochs, lr=lr, batch_size=batch_size)
                accuracy = ensemble_accuracy(trained, test.x, test.y, keep["test"].view(-1, *test.x.shape), fill)
                for j, cell in enumerate(todo):
                    results[cell] = (accuracy[2 * j].item(), accuracy[2 * j + 1].item())
            for k, r in cells:
                def compute(k=k, r=r):
                    top_acc, bottom_acc = results[(k, r)]
                    return {"top_accuracy": top_acc, "bottom_accuracy": bottom_acc, "diffroar": top_acc - bottom_acc}

                rows.append(memo(store, "diffroar", settings(k, r), compute))
    return AuditResult("diffroar", rows)
