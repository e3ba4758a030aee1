"""Fitted factors on disk: ``settings.json`` (what was fitted, readable) and ``factors.pt`` (the tensors).

The tensors load with ``torch.load(..., weights_only=True)``: a folder from elsewhere is data, never code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SETTINGS, FACTORS = "settings.json", "factors.pt"


def write(folder, settings: dict, factors: dict) -> Path:
    """Write ``settings`` (JSON values) and ``factors`` (nested dicts of tensors) into ``folder`` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({name: {key: t.detach().cpu() for key, t in f.items()} for name, f in factors.items()},
               folder / FACTORS)
    (folder / SETTINGS).write_text(json.dumps(settings, indent=2, sort_keys=True))
    return folder


def read(folder) -> tuple[dict, dict]:
    """``(settings, factors)`` from a folder ``write`` made; a ValueError naming what is missing."""
    folder = Path(folder)
    missing = [name for name in (SETTINGS, FACTORS) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"folder {str(folder)!r} holds no fitted influence factors (missing {', '.join(missing)}); "
                         "write one with Influence.save(folder)")
    settings = json.loads((folder / SETTINGS).read_text())
    return settings, torch.load(folder / FACTORS, map_location="cpu", weights_only=True)
