"""Put a model into the state attribution needs and give it back exactly as found."""

import warnings
from contextlib import contextmanager

from torch import nn


@contextmanager
def prepared(model: nn.Module):
    """Evaluate ``model`` in eval mode with frozen parameters; restore both afterwards.

    Parameters are frozen so that no parameter gradient is ever computed (gradients are taken
    with ``torch.autograd.grad``, so ``.grad`` is never written either). Every module's own
    training flag and every parameter's ``requires_grad`` flag are restored on success and
    on error.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    if model.training:
        warnings.warn(
            "model is in train mode; gradaudit evaluates it in eval mode (dropout off, "
            "BatchNorm running statistics) and restores train mode afterwards",
            UserWarning,
            stacklevel=5,
        )
    try:
        model.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)
