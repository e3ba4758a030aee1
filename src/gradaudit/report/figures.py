"""Heatmap figures: examples x methods, side by side.

A map that is exactly zero everywhere would be drawn as a black panel that says nothing; the
panel carries a note instead (for the CAM family: no weighted sum was positive, so the final
ReLU left nothing), and the PNG keeps the notes as text (``NOTES_KEY``) for the HTML report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..maps import heatmap
from ..methods import Method
from ..methods.cam import CAMMethod

NOTES_KEY = "gradaudit notes"          # PNG text chunk: one "method, example i: note" per line
ZERO_NOTE = "all zero"
CAM_ZERO_NOTE = "all zero: every weighted sum <= 0; try relu=False or another layer"


def zero_note(method: Method | None = None) -> str:
    """What an all-zero map of ``method`` means, in a line: for a CAM-family method with its final
    ReLU on, no channel-weighted sum was positive; for any other method (or None), just that."""
    return CAM_ZERO_NOTE if isinstance(method, CAMMethod) and method.relu else ZERO_NOTE


def zero_maps(maps: Mapping[str, torch.Tensor]) -> list[tuple[str, int]]:
    """(method name, example index) of every map in ``maps`` (name -> attribution [B, ...]) that is
    exactly zero everywhere, in the order of ``maps`` then examples."""
    return [(name, i) for name, m in maps.items()
            for i, zero in enumerate((m.detach() == 0).flatten(1).all(1).tolist()) if zero]


def _notes(maps: Mapping[str, torch.Tensor], methods: Mapping[str, Method] | None) -> dict[tuple[str, int], str]:
    """{(method name, example index): note} for every all-zero map (see ``zero_note``)."""
    return {(name, i): zero_note((methods or {}).get(name)) for name, i in zero_maps(maps)}


def grid_figure(images: torch.Tensor, maps: dict[str, torch.Tensor], titles: list[str] | None = None,
                methods: Mapping[str, Method] | None = None):
    """The matplotlib Figure ``method_grid`` saves: one row per example, the input then one column per
    method; a panel whose map is all zero carries its note (``zero_note``) in white on the black.

    images: [B, C, H, W] (C = 1 or 3). maps: method name -> attribution (input-shaped or
    [B, H, W]), each reduced with ``heatmap(..., normalize=True)``.
    methods: the methods that drew ``maps`` (same names), used only to word the note on a panel
    whose map is all zero; without them the note says "all zero" alone.
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(images), len(maps) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    shown = images.detach().float().cpu()
    reduced = {name: heatmap(m.detach().float().cpu(), normalize=True) for name, m in maps.items()}
    notes = _notes(maps, methods)
    for i in range(rows):
        picture = shown[i].permute(1, 2, 0).squeeze(-1)
        axes[i, 0].imshow(picture.numpy(), cmap="gray" if picture.ndim == 2 else None)
        axes[i, 0].set_ylabel(titles[i] if titles else "", fontsize=8)
        for j, (name, m) in enumerate(reduced.items(), start=1):
            axes[i, j].imshow(m[i].numpy(), cmap="inferno", vmin=0, vmax=1)
            if (name, i) in notes:
                axes[i, j].text(0.5, 0.5, textwrap.fill(notes[name, i], 20), color="white", fontsize=5,
                                ha="center", va="center", transform=axes[i, j].transAxes)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def method_grid(images: torch.Tensor, maps: dict[str, torch.Tensor], path: str | Path,
                titles: list[str] | None = None, methods: Mapping[str, Method] | None = None) -> Path:
    """Save ``grid_figure(images, maps, titles, methods)`` as a PNG at ``path``; the notes on all-zero
    panels also go into the PNG's text chunk ``NOTES_KEY``, one "method, example i: note" per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = grid_figure(images, maps, titles, methods)
    import matplotlib.pyplot as plt

    text = "\n".join(f"{name}, example {i}: {note}" for (name, i), note in _notes(maps, methods).items())
    fig.savefig(path, dpi=110, metadata={NOTES_KEY: text} if text else None)
    plt.close(fig)
    return path
