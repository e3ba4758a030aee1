"""Any dataset in: turn what a user hands an audit or ``train.fit`` into tensors ``.x``, ``.y``.

Accepted everywhere: an object that keeps its tensors as ``.x`` and ``.y`` (``blockmnist``,
``signal_coordinates``), an ``(x, y)`` pair of tensors, a ``TensorDataset``, a ``DataLoader``, or a
map-style dataset (anything with ``len`` and indexing, a list included) of ``(x, y, ...)`` items.
Extra attributes of the original (``signal_mask``, ``signal``) stay reachable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

ACCEPTED = ("a map-style Dataset of (x, y, ...) items, an (x, y) pair of tensors, a TensorDataset, a DataLoader, "
            "or an object with .x and .y tensors")


@dataclass
class Examples:
    """Tensors x [N, ...] and y [N] (None when the data has no labels); other attributes are read
    from the object they came from (``source``), e.g. BlockMNIST's ``signal_mask``."""

    x: Tensor
    y: Tensor | None
    source: object = None

    def __len__(self) -> int:
        return len(self.x)

    def __getattr__(self, name):
        source = self.__dict__.get("source")
        if source is not None and not name.startswith("__") and hasattr(source, name):
            return getattr(source, name)
        raise AttributeError(f"the data has no {name!r}: this audit needs data that carries it "
                             f"(a {type(source).__name__ if source is not None else 'plain (x, y)'} does not)")


def _describe(data) -> str:
    if isinstance(data, (list, tuple)):
        inner = type(data[0]).__name__ if len(data) else "nothing"
        return f"a {type(data).__name__} of {len(data)} {inner} items"
    return type(data).__name__


def _stack(items, name: str, data) -> Examples:
    if not items:
        raise ValueError(f"{name} is empty; it needs at least one (x, y) example")
    if not all(isinstance(item, (tuple, list)) and len(item) >= 2 and isinstance(item[0], Tensor) for item in items):
        raise TypeError(f"{name} must be {ACCEPTED}; got {_describe(data)} whose items are not (x tensor, y, ...)")
    x = torch.stack([item[0] for item in items])
    y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
    return Examples(x, y)


def as_examples(data, name: str = "data", labels: bool = True) -> Examples:
    """``data`` as ``Examples`` (see the module docstring); ``labels=False`` also accepts a bare
    tensor of inputs [N, ...]. Anything else is a TypeError naming what was passed."""
    if isinstance(data, Examples):
        return data
    if isinstance(data, Tensor):
        if labels:
            raise TypeError(f"{name} must be {ACCEPTED}; got a bare tensor without labels")
        return Examples(data, None)
    has_y = isinstance(getattr(data, "y", None), Tensor)
    if isinstance(getattr(data, "x", None), Tensor) and (has_y or not labels):
        return Examples(data.x, data.y if has_y else None, data)
    if isinstance(data, TensorDataset):
        return Examples(data.tensors[0], data.tensors[1] if len(data.tensors) > 1 else None)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data) \
            and data[0].ndim >= 1 and data[1].ndim in (1, 2) and len(data[0]) == len(data[1]):
        return Examples(data[0], data[1].long())                # labels [N], or multi-hot [N, K] (multilabel)
    if isinstance(data, DataLoader):
        batches = list(data)
        if not batches:
            raise ValueError(f"{name} is an empty DataLoader")
        if not all(isinstance(b, (tuple, list)) and len(b) >= 2 for b in batches):
            raise TypeError(f"{name} is a DataLoader whose batches are not (x, y, ...)")
        return Examples(torch.cat([b[0] for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches]).long())
    if hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, dict)):
        return _stack([data[i] for i in range(len(data))], name, data)
    raise TypeError(f"{name} must be {ACCEPTED}; got {_describe(data)}")
