"""Heatmap figures: examples x methods, side by side (images), as curves under the signal (1-D inputs)
or as rows of depth slices (volumes, video).

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
MAX_SLICES = 8                         # depth slices drawn per example of 3-D inputs


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


def _picture(image: torch.Tensor) -> torch.Tensor:
    """[H, W] (grey) or [H, W, 3] (colour) of an image [C, H, W]; other channel counts are averaged to grey."""
    return image.permute(1, 2, 0) if len(image) == 3 else image.mean(0)


def _note(ax, note: str) -> None:
    import textwrap

    ax.text(0.5, 0.5, textwrap.fill(note, 20), color="white", fontsize=5, ha="center", va="center",
            transform=ax.transAxes, bbox={"facecolor": "black", "alpha": 0.5, "linewidth": 0})


def _image_grid(plt, shown, reduced, titles, notes):
    """Images [B, C, H, W]: one row per example, the input then one column per method."""
    rows, cols = len(shown), len(reduced) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for i in range(rows):
        picture = _picture(shown[i])
        axes[i, 0].imshow(picture.numpy(), cmap="gray" if picture.ndim == 2 else None)
        axes[i, 0].set_ylabel(titles[i] if titles else "", fontsize=8)
        for j, (name, m) in enumerate(reduced.items(), start=1):
            axes[i, j].imshow(m[i].numpy(), cmap="inferno", vmin=0, vmax=1)
            if (name, i) in notes:
                _note(axes[i, j], notes[name, i])
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=8)
    return fig, axes


def _signal_grid(plt, shown, reduced, titles, notes):
    """Signals [B, C, L]: one column per example, the signal (one line per channel) on top and each
    method's attribution curve under it, on the same position axis."""
    rows, cols = len(reduced) + 1, len(shown)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.1 * rows), squeeze=False, sharex="col")
    position = torch.arange(shown.shape[-1]).numpy()
    for i in range(cols):
        for channel in shown[i]:
            axes[0, i].plot(position, channel.numpy(), linewidth=0.8)
        axes[0, i].set_title(titles[i] if titles else f"example {i}", fontsize=8)
        for j, (name, m) in enumerate(reduced.items(), start=1):
            axes[j, i].fill_between(position, m[i].numpy(), color="tab:orange", alpha=0.4, linewidth=0)
            axes[j, i].plot(position, m[i].numpy(), color="tab:red", linewidth=0.8)
            axes[j, i].set_ylim(0, 1.05)
            if (name, i) in notes:
                _note(axes[j, i], notes[name, i])
            if i == 0:
                axes[j, i].set_ylabel(name, fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=8)
    return fig, axes


def _volume_grid(plt, shown, reduced, titles, notes):
    """Volumes or video [B, C, D, H, W]: for each example a row of depth slices of the input, then one such
    row per method (at most ``MAX_SLICES`` slices, evenly spaced along depth)."""
    depth = shown.shape[2]
    slices = torch.linspace(0, depth - 1, min(depth, MAX_SLICES)).round().long().unique().tolist()
    per_example = len(reduced) + 1
    rows, cols = len(shown) * per_example, len(slices)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows), squeeze=False)
    for i in range(len(shown)):
        top = i * per_example
        for k, z in enumerate(slices):
            picture = _picture(shown[i][:, z])
            axes[top, k].imshow(picture.numpy(), cmap="gray" if picture.ndim == 2 else None)
            axes[top, k].set_title(f"depth {z}", fontsize=7)
            for j, m in enumerate(reduced.values(), start=1):
                axes[top + j, k].imshow(m[i][z].numpy(), cmap="inferno", vmin=0, vmax=1)
        axes[top, 0].set_ylabel(f"{titles[i]}\ninput" if titles else "input", fontsize=7)
        for j, name in enumerate(reduced, start=1):
            axes[top + j, 0].set_ylabel(name, fontsize=7)
            if (name, i) in notes:
                _note(axes[top + j, 0], notes[name, i])
    return fig, axes


def grid_figure(images: torch.Tensor, maps: dict[str, torch.Tensor], titles: list[str] | None = None,
                methods: Mapping[str, Method] | None = None):
    """The matplotlib Figure ``method_grid`` saves, laid out by the inputs' spatial axes:

    - images [B, C, H, W]: one row per example, the input then one column per method;
    - signals [B, C, L]: one column per example, the signal on top and each method's attribution as a
      curve under it (same position axis);
    - volumes or video [B, C, D, H, W]: per example, a row of depth slices of the input, then a row of
      the same slices for each method (at most ``MAX_SLICES``, evenly spaced).

    images: the inputs (C = 1 or 3 is drawn as grey or colour; other counts as their channel mean).
    maps: method name -> attribution (input-shaped or [B, *spatial]), each reduced with
    ``heatmap(..., normalize=True, spatial=images.ndim - 2)``.
    titles: one label per example. methods: the methods that drew ``maps`` (same names), used only to
    word the note on a panel whose map is all zero (``zero_note``); without them it says "all zero".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(images, torch.Tensor) or not 3 <= images.ndim <= 5:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be [B, C, L], [B, C, H, W] or [B, C, D, H, W]; got {shape}")
    spatial = images.ndim - 2
    shown = images.detach().float().cpu()
    reduced = {name: heatmap(m.detach().float().cpu(), normalize=True, spatial=spatial) for name, m in maps.items()}
    draw = {1: _signal_grid, 2: _image_grid, 3: _volume_grid}[spatial]
    fig, axes = draw(plt, shown, reduced, titles, _notes(maps, methods))
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
