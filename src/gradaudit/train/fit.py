"""Standard training of a classifier on a dataset of (x, y, ...) items, with progress."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


def fit(model: nn.Module, dataset: Dataset, epochs: int = 2, lr: float = 1e-3, batch_size: int = 64,
        seed: int = 0, progress: bool = True) -> nn.Module:
    """Train ``model`` with Adam and cross-entropy; returns it in eval mode.

    dataset items are ``(x, y)`` or ``(x, y, extra...)``; the extras are ignored.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False, mininterval=1.0)
        for x, y, *_ in bar:
            optimiser.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimiser.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Share of examples of ``dataset`` the model classifies correctly."""
    model.eval()
    correct = total = 0
    for x, y, *_ in DataLoader(dataset, batch_size=batch_size):
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1)
