"""Read activations at named layers during forward so their gradients can be taken.

A forward hook records the layer's output ``a`` and hands the rest of the network a clone,
so in-place operations downstream (``nn.ReLU(inplace=True)``, ``out += identity``) modify
the clone and never the recorded tensor: ``autograd.grad(score, a)`` stays exact.
"""

from __future__ import annotations

import difflib

from torch import Tensor, nn


def resolve_layer(model: nn.Module, layer) -> tuple[str, nn.Module]:
    """``(name, module)`` for a dotted module name or a module of ``model`` (of the user's model
    inside a wrapper that sets ``explained_model``, so names stay the user's)."""
    model = getattr(model, "explained_model", model)
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError("layer is a module that is not part of the model")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted module name or an nn.Module, got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer in modules:
        return layer, modules[layer]
    close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.4)
    hint = f"; close matches: {', '.join(close)}" if close else (
        f"; the model's layers include: {', '.join(list(n for n in modules if n)[:12])}")
    raise ValueError(f"layer {layer!r} is not a module of the model{hint}")


def first_tensor(output):
    """The tensor a layer produced, and how to put a replacement back in its place."""
    if isinstance(output, Tensor):
        return output, lambda t: t
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return output[0], lambda t: (t, *output[1:])
    raise TypeError(f"layer output is {type(output).__name__}; expected a tensor or a tuple starting with one")


class Probe:
    """Context manager: record the outputs of ``layers`` (list of ``(name, module)``) in forward."""

    def __init__(self, layers):
        self.layers = list(layers)
        self.recorded: dict[str, Tensor] = {}
        self._handles = []

    def __enter__(self):
        try:
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name):
        def record(module, inputs, output):
            if name in self.recorded:
                raise ValueError(
                    f"layer {name!r} ran more than once in one forward pass; observe a module "
                    "that runs once (e.g. a specific block rather than a shared one)"
                )
            tensor, put_back = first_tensor(output)
            # Without a path to the input, start the graph here: backward then stops at this layer.
            observed = tensor if tensor.requires_grad else tensor.detach().requires_grad_(True)
            self.recorded[name] = observed
            return put_back(observed.clone())

        return record

    def activations(self) -> list[Tensor]:
        """The recorded outputs in the order of ``layers``; a clear error for a layer never run."""
        missing = [name for name, _ in self.layers if name not in self.recorded]
        if missing:
            raise ValueError(
                f"layer {missing[0]!r} was never called during the model's forward pass on these "
                "inputs; choose a module that forward uses"
            )
        return [self.recorded[name] for name, _ in self.layers]
