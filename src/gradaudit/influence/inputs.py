"""Training sets and queries in: any dataset ``train.fit`` accepts, as tensors on the model's device, in chunks."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..data.inputs import Examples, as_examples
from ..engine.checks import check_batch_size, check_inputs
from ..engine.chunks import auto_rows

TOKEN_CHUNK = 16


def examples(data, name: str) -> Examples:
    """``data`` as ``Examples`` with labels; an ``(x, y)`` pair with floating-point targets keeps them as they
    are (regression), where ``as_examples`` would make class indices of them."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data) \
            and data[1].is_floating_point() and len(data[0]) == len(data[1]):
        found = Examples(data[0], data[1])
    else:
        found = as_examples(data, name)
    if found.y is None:
        raise ValueError(f"{name} has no labels; influence needs (x, y) examples (the loss of each one)")
    if len(found) == 0:
        raise ValueError(f"{name} is empty; it needs at least one (x, y) example")
    check_inputs(found.x, needs_gradients=False)    # weights are differentiated, never inputs: token ids are fine
    return found


def check_shape(found: Examples, shape: tuple[int, ...], name: str, sequences: bool = False) -> None:
    """A ValueError when ``found``'s per-example input shape is not ``shape`` (the training inputs'); for
    ``sequences`` (a loss over token positions) the first axis, the sequence length, may differ."""
    skip = 1 if sequences else 0
    if tuple(found.x.shape[1 + skip:]) != tuple(shape[skip:]):
        raise ValueError(f"{name} has inputs of per-example shape {list(found.x.shape[1:])}; the model was fitted "
                         f"on inputs of shape {list(shape)}")


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def chunk_size(model: nn.Module, x: Tensor, batch_size: int | None, bytes_per_example: int) -> int:
    """Examples per pass: ``batch_size``, or as many as the engine's memory budget allows for a forward and
    backward (``auto_rows``) and for the per-example gradients (``bytes_per_example`` each, 256 MiB in all).
    The engine measures a forward by differentiating its input, which token ids cannot be: for integer
    inputs at most ``TOKEN_CHUNK`` sequences per pass."""
    check_batch_size(batch_size)
    if batch_size is not None:
        return batch_size
    rows = auto_rows(model, x[:2]) if x.is_floating_point() else TOKEN_CHUNK
    return max(1, min(rows, 256 * 2**20 // max(1, bytes_per_example)))


def chunks(found: Examples, size: int, device: torch.device) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """``(rows, x, y)`` for consecutive chunks of ``size`` examples, moved to ``device``."""
    for start in range(0, len(found), size):
        rows = slice(start, min(start + size, len(found)))
        yield rows, found.x[rows].to(device), found.y[rows].to(device)
