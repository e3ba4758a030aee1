"""Editing a layer's output during forward (activation steering), undone on exit."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from torch import Tensor, nn

from .probe import first_tensor


@contextmanager
def edited_output(module: nn.Module, edit: Callable[[Tensor], Tensor]):
    """Within the block, ``module``'s output tensor (the first, for tuple outputs) becomes
    ``edit(output)`` on every forward; the hook is removed on exit, also after an error."""

    def hook(_module, _inputs, output):
        tensor, put_back = first_tensor(output)
        return put_back(edit(tensor))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
