"""Standard and PGD adversarial training of a classifier, with progress and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.inputs import as_examples
from .pgd import PGD
from .recipe import Recipe


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """One epoch's shuffled index batches; shared by single and ensemble training so that the
    same seed means the same batches."""
    return list(torch.randperm(n, generator=generator).split(batch_size))


def fit(model: nn.Module, dataset: Dataset, recipe: Recipe | None = None, *, seed: int = 0,
        adversary: PGD | None = None, test: Dataset | None = None, progress: bool = True,
        **settings) -> nn.Module:
    """Train ``model`` on cross-entropy, on clean or PGD examples; returns it in eval mode.

    recipe / settings: a ``Recipe`` and/or its fields as keywords (``epochs``, ``lr``,
        ``batch_size``, ``optimizer`` = "adam" | "sgd" | "adamw", ``momentum``, ``weight_decay``,
        ``schedule`` = None | "step" | "cosine", ``gamma``, ``every``, ``floor``); default Adam, lr 1e-3.
    seed: fixes the batch order (and PGD's random starts).
    adversary: ``PGD(...)`` for adversarial training (Madry et al. 2018): each batch is replaced
        by its adversarial examples against the current model.
    test: if given, clean (and adversarial) test accuracy is printed at the end.
    """
    recipe = Recipe.of(recipe, **settings)
    examples = as_examples(dataset, "dataset")
    x, y = examples.x, examples.y
    generator = torch.Generator().manual_seed(seed)
    optimiser = recipe.optimizer_for(model.parameters())
    for epoch in range(recipe.epochs):
        recipe.start_epoch(optimiser, epoch)
        batches = batch_order(len(y), recipe.batch_size, generator)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=None if progress else True,
                   leave=False, mininterval=1.0)
        for step, index in enumerate(bar):
            xb, yb = x[index], y[index]
            if adversary is not None:
                model.eval()
                xb = recipe.adversary_at(adversary, epoch, step, len(batches)).perturb(model, xb, yb, generator)
            model.train()
            optimiser.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimiser.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    if test is not None:
        scores = evaluate(model, test, adversary)
        print("  ".join(f"{name} accuracy {value:.3f}" for name, value in scores.items()))
    return model


def evaluate(model: nn.Module, dataset: Dataset, adversary: PGD | None = None, batch_size: int = 256,
             seed: int = 0) -> dict[str, float]:
    """Clean accuracy and, with an adversary, accuracy on its adversarial examples."""
    examples = as_examples(dataset, "dataset")
    x, y = examples.x, examples.y
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    correct = {"clean": 0} | ({"adversarial": 0} if adversary is not None else {})
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with torch.no_grad():
            correct["clean"] += (model(xb).argmax(1) == yb).sum().item()
        if adversary is not None:
            adv = adversary.perturb(model, xb, yb, generator)
            with torch.no_grad():
                correct["adversarial"] += (model(adv).argmax(1) == yb).sum().item()
    return {name: count / max(len(y), 1) for name, count in correct.items()}


def accuracy(model: nn.Module, dataset: Dataset) -> float:
    """Share of examples of ``dataset`` the model classifies correctly."""
    return evaluate(model, dataset)["clean"]
