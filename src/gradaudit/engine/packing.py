"""Several inputs and extra forward arguments, seen by the engine as one tensor.

A model called as ``model(x1, x2, ..., *forward_args)`` is wrapped as a row-conditioned model of
one flat tensor [B, D1 + D2 + ...]: every method then works unchanged (chunking, samples, noise,
paths), and attributions come back as a tuple shaped like the inputs. ``forward_args`` are
passed unchanged and not attributed; a tensor among them whose first axis is the batch (an
attention mask, metadata) follows the rows each pass evaluates.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .forward import RowConditioned

_LAYOUT: ContextVar[Layout | None] = ContextVar("gradaudit_input_layout", default=None)


@dataclass(frozen=True)
class Layout:
    """Per-example shapes of the inputs packed side by side in a flat tensor [B, D]."""

    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    def pack(self, parts, name: str = "inputs") -> Tensor:
        """A tuple of tensors [N, *shape_i] as one [N, D] tensor."""
        if not isinstance(parts, (tuple, list)) or len(parts) != len(self.shapes):
            got = f"a tuple of {len(parts)}" if isinstance(parts, (tuple, list)) else type(parts).__name__
            raise ValueError(f"{name} must be a tuple of {len(self.shapes)} tensors, one per input; got {got}")
        rows = []
        for i, (part, shape) in enumerate(zip(parts, self.shapes, strict=True)):
            if not isinstance(part, Tensor) or tuple(part.shape[1:]) != shape:
                found = list(part.shape[1:]) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(f"{name}[{i}] must have per-example shape {list(shape)}; got {found}")
            rows.append(part.flatten(1))
        return torch.cat(rows, 1)

    def unpack(self, flat: Tensor) -> tuple[Tensor, ...]:
        """[N, D] back into the tuple of [N, *shape_i]."""
        return tuple(p.reshape(len(flat), *s) for p, s in zip(flat.split(self.sizes, 1), self.shapes, strict=True))


def current_layout() -> Layout | None:
    """The layout of the call being explained, or None for a single tensor input."""
    return _LAYOUT.get()


class _Packed(RowConditioned):
    """``model(*inputs, *forward_args)`` as a model of the flat tensor [R, D] and each row's example."""

    def __init__(self, model: nn.Module, layout: Layout | None, forward_args: tuple, batch: int):
        super().__init__()
        self.model, self.layout, self.forward_args, self.batch = model, layout, forward_args, batch
        self.training = model.training

    @property
    def explained_model(self) -> nn.Module:
        """The user's model: layer names resolve in it."""
        return self.model

    def forward(self, x, rows):
        inputs = self.layout.unpack(x) if self.layout is not None else (x,)
        extra = [a[rows.to(a.device)] if isinstance(a, Tensor) and a.ndim and len(a) == self.batch else a
                 for a in self.forward_args]
        return self.model(*inputs, *extra)


def _check_forward_args(forward_args) -> tuple:
    if forward_args is None:
        return ()
    if not isinstance(forward_args, (tuple, list)):
        raise TypeError(f"forward_args must be a tuple of extra arguments for the model; got "
                        f"{type(forward_args).__name__} (wrap a single argument: forward_args=(mask,))")
    return tuple(forward_args)


@contextmanager
def packed(model: nn.Module, inputs, forward_args=()):
    """``(model, x, unpack)`` for the engine: unchanged for one tensor and no ``forward_args``;
    otherwise the wrapped model, the flat (or single) input and a function restoring the result's
    structure (input-shaped results become a tuple; layer maps pass through)."""
    forward_args = _check_forward_args(forward_args)
    several = isinstance(inputs, (tuple, list))
    if not several and not forward_args:
        yield model, inputs, (lambda result: result)
        return
    if isinstance(model, RowConditioned):
        raise TypeError("tuple inputs and forward_args do not combine with a row-conditioned model")
    if several:
        if not inputs or not all(isinstance(t, Tensor) for t in inputs):
            raise TypeError("inputs must be a tensor or a non-empty tuple of tensors")
        if len({len(t) for t in inputs}) != 1:
            raise ValueError(f"every input must have the same batch size; got {[len(t) for t in inputs]}")
        if len({t.dtype for t in inputs}) != 1 or not all(t.is_floating_point() for t in inputs):
            raise TypeError(f"tuple inputs must share one floating-point dtype; got {[t.dtype for t in inputs]} "
                            "(pass token ids or other integer inputs through forward_args)")
        layout = Layout(tuple(tuple(t.shape[1:]) for t in inputs))
        x = layout.pack(inputs)
    else:
        layout, x = None, inputs
    token = _LAYOUT.set(layout)
    try:
        wrapped = _Packed(model, layout, forward_args, len(x))

        def unpack(result):
            if layout is not None and isinstance(result, Tensor) and result.shape == x.shape:
                return layout.unpack(result)
            return result

        yield wrapped, x, unpack
    finally:
        _LAYOUT.reset(token)


def check_reference_set(name: str, value) -> None:
    """``value`` is a set of M >= 1 reference inputs: a tensor [M, ...] or a tuple of them, one per input."""
    if not isinstance(value, (Tensor, tuple, list)) or (isinstance(value, Tensor) and value.ndim == 0) \
            or len(value) == 0:
        raise TypeError(f"{name} must be a tensor [M, ...] of M >= 1 reference inputs (a tuple of them, one per "
                        "input, for tuple inputs)")


def references(value, x: Tensor, name: str) -> Tensor:
    """A set of reference inputs [M, ...] in ``x``'s layout: a tensor, or (for tuple inputs) a
    tuple of tensors [M, *shape_i], one per input."""
    check_reference_set(name, value)
    layout = current_layout()
    if isinstance(value, (tuple, list)):
        if layout is None:
            raise TypeError(f"{name} is a tuple, but the inputs are one tensor: give one tensor [M, ...]")
        value = layout.pack(value, name)
    if value.shape[1:] != x.shape[1:]:
        raise ValueError(f"{name} has per-example shape {list(value.shape[1:])}; the inputs have {list(x.shape[1:])}")
    return value.to(device=x.device, dtype=x.dtype)
