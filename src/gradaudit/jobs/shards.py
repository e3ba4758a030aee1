"""``gradaudit explain --input-dir``: map a folder of images in shards, one maps file per shard.

Shard i holds images [i x size, (i + 1) x size) of the sorted file list and is written to
``OUT/maps-00000.pt`` ({"files", "targets", "maps": {method: [B, H, W]}}) at once, through a
temporary file, by this process alone; a rerun skips the shards whose file exists. With the Ray
executor each shard is a task that loads the model itself (weights_only, as here).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..data.files import IMAGE_SUFFIXES
from ..engine.backprop import predicted_classes
from ..loading import first_conv_channels, load_image, load_model
from ..maps import heatmap
from ..units import Unit
from .registry import METHODS, MethodSettings


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; an error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--input-dir {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--input-dir {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def map_shard(model_spec: str, weights: str | None, trust_pickle: bool, files: list[str], names: list[str],
              settings: dict, channels: int | None, size: tuple | None, target: int | None) -> dict:
    """One shard (any executor): load the model, read ``files``, map them with each method in ``names``."""
    model = load_model(model_spec, weights, trust_pickle)
    channels = channels or first_conv_channels(model)
    x = torch.cat([load_image(f, channels, size) for f in files]).float()
    targets = torch.full((len(x),), target) if target is not None else predicted_classes(model, x, len(x))
    config = MethodSettings(**settings)
    return {"files": [Path(f).name for f in files], "targets": targets,
            "maps": {name: heatmap(METHODS[name](config)(model, x, targets)) for name in names}}


def map_folder(executor, folder, out_dir, model_spec: str, weights: str | None, trust_pickle: bool,
               names: list[str], settings: dict, channels: int | None = None, size: tuple | None = None,
               target: int | None = None, shard_size: int = 64) -> tuple[int, int]:
    """Map every image of ``folder`` into ``out_dir`` shard by shard; returns (shards written, shards skipped)."""
    files = image_files(folder)
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1; got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = [files[i:i + shard_size] for i in range(0, len(files), shard_size)]
    paths = {f"shard {i}": out_dir / f"maps-{i:05d}.pt" for i in range(len(shards))}
    units = [Unit(name, map_shard, (model_spec, weights, trust_pickle, [str(f) for f in shards[i]], names, settings,
                                    channels, size, target))
             for i, (name, path) in enumerate(paths.items()) if not path.exists()]

    def write(unit: Unit, result: dict) -> None:
        partial = paths[unit.name].with_suffix(".tmp")
        torch.save(result, partial)
        os.replace(partial, paths[unit.name])

    executor.run(units, write)
    return len(units), len(shards) - len(units)
