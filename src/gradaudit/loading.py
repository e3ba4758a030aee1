"""Loading what users hand us: a model factory, weights, input tensors and images. Weights and
tensors load with ``weights_only=True``; a full pickle (arbitrary code) only with ``trust_pickle``.
Every way a file can fail to fit ends in a ValueError that says what was found and what to do."""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")   # common wrappers around a state dict


def build_model(spec: str, argument: str = "--model") -> nn.Module:
    """A fresh model from ``spec`` = "package.module:factory" (the factory takes no arguments); the
    working directory is importable, as with ``python -m``."""
    module_name, _, factory = spec.partition(":")
    if not module_name or not factory or "@" in spec:
        raise ValueError(f"{argument} must look like package.module:factory; got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        model = getattr(importlib.import_module(module_name), factory)()
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot build the model from {spec!r}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_model(spec: str, weights: str | None = None, trust_pickle: bool = False, argument: str = "--model"
               ) -> nn.Module:
    """``spec`` is "package.module:factory"; ``weights`` a state dict file fitted into its model."""
    model = build_model(spec, argument)
    if weights is not None:
        load_weights(model, weights, trust_pickle, spec)
    return model.eval()


def load_weights(model: nn.Module, path: str | Path, trust_pickle: bool, spec: str) -> None:
    """Fit the state dict in ``path`` into ``model``: a whole pickled model (with ``trust_pickle``)
    gives its state dict, a checkpoint dict its ``state_dict``/``model_state_dict``/``model`` entry."""
    found = load_tensor_file(path, trust_pickle)
    if isinstance(found, nn.Module):
        found = found.state_dict()
    if isinstance(found, dict) and not any(isinstance(v, torch.Tensor) for v in found.values()):
        found = next((found[k] for k in CHECKPOINT_KEYS if isinstance(found.get(k), dict)), found)
    if not isinstance(found, dict) or not all(isinstance(v, torch.Tensor) for v in found.values()):
        raise ValueError(f"{path} holds {type(found).__name__}, not a state_dict (a dict of tensors from "
                         "torch.save(model.state_dict(), path))")
    expected = model.state_dict()
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    resized = [f"{k} (file {list(found[k].shape)}, model {list(v.shape)})" for k, v in expected.items()
               if k in found and found[k].shape != v.shape]
    if missing or unexpected or resized:
        parts = [f"{label} {_first(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", resized)) if keys]
        raise ValueError(f"the weights in {path} do not fit the model built by {spec}: {'; '.join(parts)}")
    model.load_state_dict(found)


def _first(keys: list[str], shown: int = 3) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def load_tensor_file(path: str | Path, trust_pickle: bool = False):
    """A state dict or tensor saved with torch.save, loaded safely unless ``trust_pickle``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):       # torch's zip, or a legacy pickle
        raise ValueError(f"{path} is not a torch file (expected the output of torch.save)")
    if trust_pickle:
        warnings.warn(f"loading {path} as a full pickle: it can run arbitrary code", UserWarning, stacklevel=2)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, weights_only=not trust_pickle, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds pickled Python objects (a whole model saved with torch.save(model)?), "
                         "not only tensors; save model.state_dict() instead, or pass --trust-pickle if you trust "
                         "the file (loading it can run arbitrary code)") from err
    except (RuntimeError, EOFError, KeyError) as err:
        raise ValueError(f"{path} is not a readable torch file ({type(err).__name__}: {err})") from err


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution, if it has one."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module.in_channels
    return None


def load_image(path: str | Path, channels: int | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """An image file as a [1, C, H, W] float tensor in [0, 1]: ``channels`` 1 (grey) or 3 (RGB),
    None keeps the file's; ``size`` (H, W) resizes."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        image = Image.open(path)
    except UnidentifiedImageError as err:
        raise ValueError(f"{path} is not an image file that Pillow can read") from err
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    mode = {1: "L", 3: "RGB"}.get(channels) or ("L" if image.mode in ("L", "1", "I", "F") else "RGB")
    image = image.convert(mode)
    if size is not None:
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).float() / 255.0
    c = 1 if mode == "L" else 3
    return pixels.view(image.height, image.width, c).permute(2, 0, 1).unsqueeze(0).contiguous()
