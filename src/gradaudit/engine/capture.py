"""Record the inputs and output gradients of named modules: what K-FAC and per-example weight gradients need.

The gradient of a Linear or Conv2d weight is built from the layer's input ``a`` and the gradient
``g`` of a loss with respect to its output (``g a^T`` summed over positions), so recording both
gives every example's weight gradient from one batched backward pass, without a per-example loop.
Outputs are recorded as ``Probe`` records them (the rest of the network gets a clone, so in-place
operations downstream never touch them), and a layer whose output does not depend on anything
that needs gradients starts the graph there: parameters stay frozen and ``.grad`` is never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .forward import run_model
from .guard import prepared
from .probe import Probe


class _Recorder(Probe):
    """A ``Probe`` that also keeps each layer's first input (detached) from the same forward."""

    def __init__(self, layers):
        super().__init__(layers)
        self.inputs: dict[str, Tensor] = {}

    def _hook(self, name):
        record = super()._hook(name)

        def hook(module, inputs, output):
            if not inputs or not isinstance(inputs[0], Tensor):
                raise TypeError(f"layer {name!r} was called without a tensor as its first input")
            self.inputs[name] = inputs[0].detach()
            return record(module, inputs, output)

        return hook


class Capture:
    """One forward of the model, then any number of backward passes through it.

    ``forward(x)`` runs the model on ``x`` [B, ...] and returns its output (with a graph);
    ``inputs`` then holds each layer's input and ``gradients(losses)`` the gradient of
    ``losses.sum()`` with respect to each layer's output, in the order of ``layers``. Rows are
    independent in eval mode, so row b of each gradient is example b's own.
    """

    def __init__(self, model: nn.Module, layers):
        self.model = model
        self.layers = list(layers)
        self._recorder: _Recorder | None = None

    def forward(self, x: Tensor):
        self._recorder = _Recorder(self.layers)
        rows = torch.arange(len(x), device=x.device)
        with self._recorder, torch.enable_grad():
            output = run_model(self.model, x, rows)
        self._outputs = self._recorder.activations()
        return output

    @property
    def inputs(self) -> list[Tensor]:
        """Each layer's input on the last forward, in the order of ``layers``."""
        if self._recorder is None:
            raise RuntimeError("call forward(x) before reading inputs")
        return [self._recorder.inputs[name] for name, _ in self.layers]

    def gradients(self, losses: Tensor, retain_graph: bool = False) -> list[Tensor]:
        """Gradients of ``losses.sum()`` with respect to each layer's output (zeros where it does not depend on it).
        ``retain_graph=True`` keeps the graph for another backward pass of the same forward."""
        if self._recorder is None:
            raise RuntimeError("call forward(x) before gradients(losses)")
        with torch.enable_grad():
            grads = torch.autograd.grad(losses.sum(), self._outputs, allow_unused=True, retain_graph=retain_graph)
        return [torch.zeros_like(out) if g is None else g.detach() for out, g in zip(self._outputs, grads, strict=True)]


@contextmanager
def capture(model: nn.Module, layers) -> Iterator[Capture]:
    """Context manager: a ``Capture`` of ``layers`` (list of ``(name, module)``) of ``model``.

    Inside, the model is in eval mode with frozen parameters (``prepared``); on exit, on success
    and on error, every hook is gone and modes and ``requires_grad`` flags are as found.
    """
    with prepared(model):
        yield Capture(model, layers)
