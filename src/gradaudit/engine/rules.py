"""Modified backward rules: guided backprop, deconvnet, and DeepLIFT's Rescale rule.

While ``modified(rule)`` is active, a ``TorchFunctionMode`` catches every call to a
ReLU-like activation that goes through torch's Python API, whether from a module
(``nn.ReLU``, ``nn.SiLU``, ...) or a functional call inside ``forward`` (``F.relu(x)``,
``torch.relu_(x)``, ``x.relu()``), and swaps its backward:

- ``"guided"``: grad_in = ReLU(f'(x) * grad_out)  (for ReLU: grad_out * 1[x > 0] * 1[grad_out > 0])
- ``"deconvnet"``: grad_in = ReLU(grad_out), ignoring the forward derivative

- ``"rescale"`` (DeepLIFT, Shrikumar et al. 2017): the model runs once on ``[x; x']`` (inputs,
  then their references, as one batch); at each nonlinearity the input half's multiplier is
  grad_in = grad_out * (f(x) - f(x')) / (x - x') (the slope f'(x) where |x - x'| < 1e-10, as
  Captum), and the same multiplier is used for the reference half. Caught in this mode only,
  besides the ReLU-like ones: sigmoid, tanh, softplus (elementwise, same rule), softmax (the
  elementwise rule, then minus its mean along the softmax axis, per row: Captum subtracts the
  mean over the whole batch) and max-pooling (Captum's rule: the pooled difference is split between
  the inputs' and the references' arg-max positions, then divided by x - x').

- ``"attnlrp"``, ``"cp"``: the AttnLRP and CP-LRP rules for transformers (``engine.lrp_rules``).
- a ``Composite`` (``engine.lrp_composites``): the LRP rules of a zennit composite for CNNs and MLPs.

Forward values are unchanged; in-place calls stay in place. What cannot be caught: activations
inside TorchScript or ``torch.compile`` code, fused C++ kernels (for example the fast path of
``nn.TransformerEncoderLayer``), and activations written as arithmetic (``x * (x > 0)``,
``x.clamp(min=0)``); their ordinary backward is used. A rule that caught nothing it needs (guided
and deconvnet: no ReLU-like activation; attnlrp and cp: no attention) says so in ``mode.missing()``,
and ``backprop`` refuses the pass with that ValueError instead of returning the plain gradient.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .lrp_composites import Composite, composite_rules
from .lrp_rules import LRP_RULES, lrp_rules

RULES = ("guided", "deconvnet", "rescale", *LRP_RULES)
RESCALE_EPS = 1e-10

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
# Caught by the rescale rule only: squashing nonlinearities (not ReLU-like, so not guided's business).
_SQUASHING = {
    torch.sigmoid: (torch.sigmoid, None), torch.Tensor.sigmoid: (torch.sigmoid, None),
    F.sigmoid: (torch.sigmoid, None), torch.tanh: (torch.tanh, None), torch.Tensor.tanh: (torch.tanh, None),
    F.tanh: (torch.tanh, None), F.softplus: (F.softplus, None),
}
_SQUASHING_IN_PLACE = {torch.sigmoid_: torch.sigmoid, torch.Tensor.sigmoid_: torch.sigmoid,
                       torch.tanh_: torch.tanh, torch.Tensor.tanh_: torch.tanh}
_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}
_MAX_POOLS = {F.max_pool1d, F.max_pool2d, F.max_pool3d}


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


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    """The inputs' and the references' rows of a rescale-mode batch [x; x']."""
    if len(t) % 2:
        raise ValueError(f"the rescale (DeepLIFT) rule needs batch-first tensors of inputs then references; a "
                         f"nonlinearity got {len(t)} rows (odd)")
    return t[: len(t) // 2], t[len(t) // 2:]


def _ratio(d_out: Tensor, d_in: Tensor, fallback: Tensor) -> Tensor:
    """d_out / d_in, or ``fallback`` where |d_in| < RESCALE_EPS."""
    small = d_in.abs() < RESCALE_EPS
    return torch.where(small, fallback, d_out / torch.where(small, torch.ones_like(d_in), d_in))


class _Rescaled(torch.autograd.Function):
    """Elementwise ``fn`` forward; backward by DeepLIFT's rescale multiplier (f(x) - f(x')) / (x - x')."""

    @staticmethod
    def forward(ctx, x, fn, args, kwargs):
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            y = fn(leaf, *args, **kwargs)
            (slope,) = torch.autograd.grad(y, leaf, torch.ones_like(y))
        (x1, x2), (y1, y2), (s1, s2) = _halves(x.detach()), _halves(y.detach()), _halves(slope)
        ctx.save_for_backward(torch.cat([_ratio(y1 - y2, x1 - x2, s1), _ratio(y1 - y2, x1 - x2, s2)]))
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None, None


class _RescaledSoftmax(torch.autograd.Function):
    """Softmax along ``dim``; backward: the elementwise rescale multiplier minus its mean along ``dim``."""

    @staticmethod
    def forward(ctx, x, dim):
        y = torch.softmax(x.detach(), dim)
        ctx.dim = dim
        ctx.save_for_backward(x.detach(), y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        exact = y * (grad - (grad * y).sum(ctx.dim, keepdim=True))        # the softmax's own gradient
        (x1, x2), (y1, y2) = _halves(x), _halves(y)
        g1, _ = _halves(grad)
        e1, _ = _halves(exact)
        unnormalised = _ratio(g1 * (y1 - y2), x1 - x2, e1)
        first = unnormalised - unnormalised.mean(ctx.dim, keepdim=True)
        return torch.cat([first, first]), None


def _unpool(values: Tensor, indices: Tensor, shape) -> Tensor:
    """Scatter-add pooled ``values`` back to their arg-max ``indices`` in an input of ``shape``."""
    out = values.new_zeros(*shape[:2], math.prod(shape[2:]))
    return out.scatter_add_(2, indices.flatten(2), values.flatten(2)).view(shape)


class _RescaledMaxPool(torch.autograd.Function):
    """Max-pooling forward; backward by Captum's DeepLIFT rule for max-pooling."""

    @staticmethod
    def forward(ctx, x, fn, args, kwargs):
        y, indices = fn(x.detach(), *args, **kwargs, return_indices=True)
        ctx.save_for_backward(x.detach(), y, indices)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y, indices = ctx.saved_tensors
        (x1, x2), (y1, y2), (i1, i2) = _halves(x), _halves(y), _halves(indices)
        g1, _ = _halves(grad)
        shape = x1.shape
        top = torch.maximum(y1, y2)
        split = _unpool(g1 * (top - y2), i1, shape) + _unpool(g1 * (y1 - top), i2, shape)
        first = _ratio(split, x1 - x2, _unpool(g1, i1, shape))
        return torch.cat([first, first]), None, None, None


class _RuleMode(TorchFunctionMode):
    """The backward ``rule`` on the forward run inside; ``caught`` counts the nonlinearities it applied to."""

    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.caught = 0

    def missing(self) -> str | None:
        """What the rule needed and the forward did not have: guided backprop and deconvnet need a ReLU-like
        activation (rescale applies to none on a linear model, where DeepLIFT is the exact gradient x delta)."""
        if self.caught or self.rule == "rescale":
            return None
        users = {"guided": "GuidedBackprop, GuidedGradCAM", "deconvnet": "Deconvnet"}[self.rule]
        return (f"the {self.rule!r} backward rule ({users}) needs a ReLU-like "
                "activation called through torch's Python API (nn.ReLU, LeakyReLU, PReLU, SiLU, GELU, ELU, CELU, "
                "SELU, Mish, ReLU6, or F.relu(x), x.relu(), ...) and caught none in this model's forward. "
                "Activations written as arithmetic (such as GPT-2's tanh GELU), inside TorchScript or "
                "torch.compile code or in fused kernels cannot be caught; Saliency(abs=False) is the plain gradient")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if self.rule == "rescale" and func in _SOFTMAX | _MAX_POOLS:
            return self._rescale_structured(func, args, kwargs)
        squashing = self.rule == "rescale" and (func in _SQUASHING or func in _SQUASHING_IN_PLACE)
        if func in _IN_PLACE or (squashing and func in _SQUASHING_IN_PLACE):
            fn, inplace, rest = (_IN_PLACE | _SQUASHING_IN_PLACE)[func], True, args[1:]
        elif func in _OUT_OF_PLACE or squashing:
            fn, position = (_OUT_OF_PLACE | _SQUASHING)[func]
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
        if self.rule == "rescale":
            y = _Rescaled.apply(x, fn, tuple(rest), kwargs)
        else:
            y = _Modified.apply(x, self.rule, fn, tuple(rest), kwargs)
        return x.copy_(y) if inplace else y

    def _rescale_structured(self, func, args, kwargs):
        """Softmax and max-pooling under the rescale rule (left alone when no gradient flows, or when the
        caller asks max-pooling for its indices or softmax for another dtype)."""
        x = args[0]
        if not (torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad):
            return func(*args, **kwargs)
        if func in _SOFTMAX:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if dim is None or kwargs.get("dtype") is not None or len(args) > 2:
                return func(*args, **kwargs)
            self.caught += 1
            return _RescaledSoftmax.apply(x, dim)
        if kwargs.pop("return_indices", False) or len(args) > 6:
            return func(*args, **kwargs)
        self.caught += 1
        return _RescaledMaxPool.apply(x, func, tuple(args[1:]), kwargs)


def modified(rule: str | Composite | None, model=None):
    """Context manager applying backward ``rule`` ("guided", "deconvnet", "rescale", "attnlrp", "cp", or an LRP
    ``Composite``) or nothing for None; the AttnLRP and LRP rules also need the ``model``."""
    if rule is None:
        return nullcontext()
    if isinstance(rule, Composite):
        return composite_rules(rule, model)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return lrp_rules(rule, model) if rule in LRP_RULES else _RuleMode(rule)
