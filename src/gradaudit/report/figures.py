"""Heatmap figures: examples x methods, side by side."""

from __future__ import annotations

from pathlib import Path

import torch

from ..maps import heatmap


def method_grid(images: torch.Tensor, maps: dict[str, torch.Tensor], path: str | Path,
                titles: list[str] | None = None) -> Path:
    """Save a PNG: one row per example, the input then one column per method.

    images: [B, C, H, W] (C = 1 or 3). maps: method name -> attribution (input-shaped or
    [B, H, W]), each reduced with ``heatmap(..., normalize=True)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = len(images), len(maps) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    shown = images.detach().float().cpu()
    reduced = {name: heatmap(m.detach().float().cpu(), normalize=True) for name, m in maps.items()}
    for i in range(rows):
        picture = shown[i].permute(1, 2, 0).squeeze(-1)
        axes[i, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        axes[i, 0].set_ylabel(titles[i] if titles else "", fontsize=8)
        for j, (name, m) in enumerate(reduced.items(), start=1):
            axes[i, j].imshow(m[i], cmap="inferno", vmin=0, vmax=1)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
