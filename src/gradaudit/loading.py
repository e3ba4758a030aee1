"""Loading what users hand us: a model factory, weights, input tensors. Weights and tensors
load with ``weights_only=True``; a full pickle (arbitrary code) only with ``trust_pickle``."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import torch
from torch import nn


def load_model(spec: str, weights: str | None = None, trust_pickle: bool = False) -> nn.Module:
    """``spec`` is "package.module:factory"; the factory is called with no arguments."""
    module_name, _, factory = spec.partition(":")
    if not module_name or not factory:
        raise ValueError(f"--model must look like package.module:factory; got {spec!r}")
    try:
        model = getattr(importlib.import_module(module_name), factory)()
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot build the model from {spec!r}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        model.load_state_dict(load_tensor_file(weights, trust_pickle))
    return model.eval()


def load_tensor_file(path: str | Path, trust_pickle: bool = False):
    """A state dict or tensor saved with torch.save, loaded safely unless ``trust_pickle``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if trust_pickle:
        warnings.warn(f"loading {path} as a full pickle: it can run arbitrary code", UserWarning, stacklevel=2)
    return torch.load(path, weights_only=not trust_pickle, map_location="cpu")
