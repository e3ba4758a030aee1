"""Loading what users hand us: a model factory, weights, input tensors and images. Weights and
tensors load with ``weights_only=True``; a full pickle (arbitrary code) only with ``trust_pickle``."""

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
