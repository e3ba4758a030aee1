"""Modified backward rules (guided backprop, deconvnet) for elementwise activations.

While ``modified(rule)`` is active, a ``TorchFunctionMode`` catches every call to a
ReLU-like activation that goes through torch's Python API, whether from a module
(``nn.ReLU``, ``nn.SiLU``, ...) or a functional call inside ``forward`` (``F.relu(x)``,
``torch.relu_(x)``, ``x.relu()``), and swaps its backward:

- ``"guided"``: grad_in = ReLU(f'(x) * grad_out)  (for ReLU: grad_out * 1[x > 0] * 1[grad_out > 0])
- ``"deconvnet"``: grad_in = ReLU(grad_out), ignoring the forward derivative

Forward values are unchanged; in-place calls stay in place. What cannot be caught: activations
inside TorchScript or ``torch.compile`` code, fused C++ kernels (for example the fast path of
``nn.TransformerEncoderLayer``), and activations written as arithmetic (``x * (x > 0)``,
``x.clamp(min=0)``); their ordinary backward is used.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

RULES = ("guided", "deconvnet")

# Out-of-place activation for each catchable function, and the position of its `inplace` argument.
_OUT_OF_PLACE = {
    F.relu: (F.relu, 1), torch.relu: (F.relu, None), torch.Tensor.relu: (F.relu, None),
    F.leaky_relu: (F.leaky_relu, 2), F.elu: (F.elu, 2), F.celu: (F.celu, 2), F.selu: (F.selu, 1),
    F.silu: (F.silu, 1), F.mish: (F.mish, 1), F.relu6: (F.relu6, 1), F.gelu: (F.gelu, None),
    F.prelu: (F.prelu, None), torch.prelu: (F.prelu, None),
}
_IN_PLACE = {
    torch.relu_: F.relu, torch.Tensor.relu_: F.relu, F.leaky_relu_: F.leaky_relu,
    F.elu_: F.elu, torch.selu_: F.selu, torch.celu_: F.celu,
}


class _Modified(torch.autograd.Function):
    """Apply activation ``fn`` forward; backward by ``rule`` using f'(x) saved at forward time."""

    @staticmethod
    def forward(ctx, x, rule, fn, args, kwargs):
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            y = fn(leaf, *args, **kwargs)
            (slope,) = torch.autograd.grad(y, leaf, torch.ones_like(y))
        ctx.rule = rule
        if rule == "guided":
            ctx.save_for_backward(slope)
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        if ctx.rule == "guided":
            (slope,) = ctx.saved_tensors
            grad = slope * grad
        return grad.clamp(min=0), None, None, None, None


class _RuleMode(TorchFunctionMode):
    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.caught = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _IN_PLACE:
            fn, inplace, rest = _IN_PLACE[func], True, args[1:]
        elif func in _OUT_OF_PLACE:
            fn, position = _OUT_OF_PLACE[func]
            rest = args[1:]
            inplace = bool(kwargs.pop("inplace", False))
            if position is not None and len(args) > position:
                inplace, rest = bool(args[position]), args[1:position]
        else:
            return func(*args, **kwargs)
        x = args[0]
        if not (torch.is_grad_enabled() and x.requires_grad):
            return func(*args, **kwargs)
        self.caught += 1
        y = _Modified.apply(x, self.rule, fn, tuple(rest), kwargs)
        return x.copy_(y) if inplace else y


def modified(rule: str | None):
    """Context manager applying backward ``rule`` ("guided", "deconvnet") or nothing for None."""
    if rule is None:
        return nullcontext()
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return _RuleMode(rule)
