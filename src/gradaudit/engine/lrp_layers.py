"""How relevance crosses one operation under the LRP rules for CNNs and MLPs (Bach et al. 2015, Montavon et al.
2019), with zennit 0.5.1's formulas.

Relevance R flows backward in place of the gradient. A dense or convolutional layer z = W x + b hands R_out
[R, out...] to its input by its rule, where stab(z) = z + s * sign(z) (sign(0) = +1, s = 1e-6 unless said):

- ``Epsilon(epsilon)``: R_in = x * W^T (R / stab_epsilon(z)), z with the bias.
- ``ZPlus()``: z = W+ x+ + b+ + W- x-; R_in = x+ * W+^T s + x- * W-^T s, s = R / stab(z) (zennit's z+: negative
  inputs count with the negative weights).
- ``AlphaBeta(alpha, beta)``, alpha - beta = 1: the positive part z_p = W+ x+ + W- x- + b+ and the negative part
  z_n = W- x+ + W+ x- + b-, each normalised by itself; R_in = alpha * (its share of z_p) - beta * (of z_n).
- ``Gamma(gamma)`` (the generalised rule, Andeol et al. 2021, as zennit): where z > 0 the weights W + gamma W+ on
  x+ (bias b + gamma b+) and W + gamma W- on x-; where z < 0 the other way round; no relevance where z = 0.
- ``Flat()``: every weight 1, every input 1, no bias: R split by the number of connections (Lapuschkin 2019).
- ``WSquare()``: R_in = (W^2)^T (R / stab(W^2 1)), no bias, as Montavon et al. 2017 (zennit also adds the squared
  bias to the denominator, so relevance leaks where the layer has a bias).
- ``ZBox(low, high)`` (z^B, for a bounded input l <= x <= h): z = W x - W+ l - W- h;
  R_in = x * W^T s - l * W+^T s - h * W-^T s.

Every rule is a list of parts, each a signed sum of terms (input, weight, bias) with its own denominator; a
layer's modified outputs are computed in the forward and their transposes applied in the backward, so a rule
costs its terms' convolutions and nothing is re-run. Terms on x- vanish (and are skipped) when x >= 0, as after
a ReLU. Besides layers: elementwise activations pass R unchanged (``pass_relevance``, zennit's Pass); additions,
sums, means and average pools split R in proportion to their inputs (``sum_relevance``, ``pool_relevance``:
zennit's Norm, R_i = x_i * J^T (R / stab(y))); ``start_relevance`` makes the relevance of the model's output
y * ds/dy (the one-hot times the logit for a class).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

STABILIZER = 1e-6


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """z + epsilon * sign(z) with sign(0) = +1 (zennit's ``stabilize``), in two passes. At z = -0.0 it adds
    -epsilon instead, which changes no relevance: every term of a zero z is zero, and so is every share of it."""
    return torch.copysign(z.new_tensor(epsilon), z).add_(z)


def unchanged(t: Tensor) -> Tensor:
    return t


def positive(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def negative(t: Tensor) -> Tensor:
    return t.clamp(max=0)


def ones(t: Tensor) -> Tensor:
    return torch.ones_like(t)


@dataclass(frozen=True)
class Term:
    """sign * layer(input, weight(W), bias(b)); ``input`` one of "x", "x+", "x-", "1", "low", "high"; ``bias``
    None for no bias."""

    input: str
    weight: Callable[[Tensor], Tensor]
    bias: Callable[[Tensor], Tensor] | None
    sign: float = 1.0


@dataclass(frozen=True)
class Part:
    """Terms summed to one denominator; their relevance counts ``coefficient`` times; ``where`` keeps only the
    outputs whose plain z is "positive" or "negative" (None: all)."""

    terms: tuple[Term, ...]
    coefficient: float = 1.0
    where: str | None = None


@dataclass(frozen=True)
class LayerRule:
    """Base of the rules for dense and convolutional layers."""

    def parts(self) -> tuple[Part, ...]:
        raise NotImplementedError

    def shift(self) -> float:
        """The s of each part's denominator stab(z) (epsilon for the epsilon rule, the stabilizer otherwise)."""
        return self.stabilizer

    def bounds(self) -> tuple[object, object]:
        """The (low, high) inputs of the box rule; (None, None) for the others."""
        return None, None


@dataclass(frozen=True)
class Epsilon(LayerRule):
    """The epsilon rule (LRP-0 for epsilon = 0), zennit's ``Epsilon``."""

    epsilon: float = 1e-6

    def parts(self):
        return (Part((Term("x", unchanged, unchanged),)),)

    def shift(self):
        return self.epsilon


@dataclass(frozen=True)
class ZPlus(LayerRule):
    """The z+ rule with negative inputs on the negative weights, zennit's ``ZPlus``."""

    stabilizer: float = STABILIZER

    def parts(self):
        return (Part((Term("x+", positive, positive), Term("x-", negative, None))),)


@dataclass(frozen=True)
class AlphaBeta(LayerRule):
    """The alpha-beta rule, zennit's ``AlphaBeta``."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = STABILIZER

    def __post_init__(self):
        # zennit's condition: both non-negative and alpha - beta = 1, so the layer's relevance is conserved.
        if not (self.alpha >= 0 and self.beta >= 0 and self.alpha - self.beta == 1):
            raise ValueError(f"AlphaBeta needs alpha >= 0, beta >= 0 and alpha - beta = 1; got alpha={self.alpha}, "
                             f"beta={self.beta}")

    def parts(self):
        return (Part((Term("x+", positive, positive), Term("x-", negative, None)), self.alpha),
                Part((Term("x+", negative, negative), Term("x-", positive, None)), -self.beta))


@dataclass(frozen=True)
class Gamma(LayerRule):
    """The generalised gamma rule, zennit's ``Gamma``."""

    gamma: float = 0.25
    stabilizer: float = STABILIZER

    def parts(self):
        g = self.gamma

        def up(t):
            return t + g * t.clamp(min=0)

        def down(t):
            return t + g * t.clamp(max=0)

        return (Part((Term("x+", up, up), Term("x-", down, None)), where="positive"),
                Part((Term("x+", down, down), Term("x-", up, None)), where="negative"))


@dataclass(frozen=True)
class Flat(LayerRule):
    """The flat rule, zennit's ``Flat``."""

    stabilizer: float = STABILIZER

    def parts(self):
        return (Part((Term("1", ones, None),)),)


@dataclass(frozen=True)
class WSquare(LayerRule):
    """The w^2 rule of Montavon et al. 2017 (without zennit's squared bias)."""

    stabilizer: float = STABILIZER

    def parts(self):
        return (Part((Term("1", torch.square, None),)),)


@dataclass(frozen=True)
class ZBox(LayerRule):
    """The z^B (box) rule, zennit's ``ZBox``. low, high: the smallest and largest input values, numbers or nested
    tuples broadcastable to the input (a tensor is stored as its nested tuple, so the rule stays hashable)."""

    low: object = None
    high: object = None
    stabilizer: float = STABILIZER

    def __post_init__(self):
        for key in ("low", "high"):
            value = getattr(self, key)
            if value is None:
                raise ValueError(f"the z^B (box) rule needs {key}=: the smallest and largest value the input can take "
                                 "(a number or a tensor broadcastable to the input, such as [1, C, 1, 1])")
            object.__setattr__(self, key, as_bound(key, value))

    def parts(self):
        return (Part((Term("x", unchanged, None), Term("low", positive, None, -1.0),
                      Term("high", negative, None, -1.0))),)

    def bounds(self):
        return self.low, self.high


def as_bound(key: str, value) -> float | tuple:
    """A box bound as a float or a nested tuple (hashable); a clear error for anything else."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    try:
        listed = torch.as_tensor(value, dtype=torch.float64).tolist()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{key} must be a number or a tensor of numbers, got {type(value).__name__}") from None

    def frozen(v):
        return tuple(frozen(e) for e in v) if isinstance(v, list) else v

    return frozen(listed)


class Affine:
    """A dense (``conv`` None) or convolutional layer with ``conv`` = (stride, padding, dilation, transposed,
    output_padding, groups) as lists; its weight and bias (BatchNorm already folded in, where it is)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, conv: tuple | None):
        self.weight, self.bias, self.conv = weight, bias, conv

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.conv is None:
            return F.linear(x, weight, bias)
        return torch.convolution(x, weight, bias, *self.conv)

    def transposed(self, x: Tensor, weight: Tensor, s: Tensor) -> Tensor:
        """W^T s: the vector-Jacobian product of x -> layer(x, weight) at s (x only gives the shape)."""
        if self.conv is None:
            return s @ weight
        return torch.ops.aten.convolution_backward(s, x, weight, None, *self.conv, [True, False, False])[0]

    @property
    def pairable(self) -> bool:
        """Whether two products W_a x_a + W_b x_b can run as one on [x_a, x_b] (not for grouped convolutions)."""
        return self.conv is None or self.conv[5] == 1

    def _dims(self) -> tuple[int, int]:
        """(the input's feature axis, the weight's input axis)."""
        return (-1, 1) if self.conv is None else (1, 0 if self.conv[3] else 1)

    def pair(self, a: Tensor, b: Tensor, weights: bool = False) -> Tensor:
        """Inputs (or, with ``weights``, weights) a and b side by side along the input features."""
        return torch.cat([a, b], self._dims()[1 if weights else 0])

    def unpair(self, t: Tensor) -> Tensor:
        """The sum of the two halves of a paired input's shares."""
        a, b = t.chunk(2, self._dims()[0])
        return a + b


def _term_input(term: Term, x: Tensor, rule: LayerRule, signed: bool) -> Tensor:
    if term.input == "x+" and not signed:
        return x
    if term.input in ("low", "high"):
        bound = rule.bounds()[term.input == "high"]
        return torch.as_tensor(bound, dtype=x.dtype, device=x.device).expand_as(x)
    return {"x": unchanged, "x+": positive, "x-": negative, "1": ones}[term.input](x)


def _live_terms(part: Part, signed: bool) -> list[Term]:
    """The part's terms, without those on x- when x has no negative entry (they are exactly zero)."""
    return [t for t in part.terms if signed or t.input != "x-"]


def _groups(part: Part, signed: bool, layer: Affine) -> list[tuple[Term, ...]]:
    """The part's live terms to compute, one product each; a pair (x+: W_a, b_a) + (x-: W_b) of one sign is one
    product over [x+, x-] with [W_a, W_b] where the layer allows (one call, one output instead of two)."""
    live = _live_terms(part, signed)
    if (len(live) == 2 and [t.input for t in live] == ["x+", "x-"] and live[1].bias is None
            and live[0].sign == live[1].sign and layer.pairable):
        return [tuple(live)]
    return [(t,) for t in live]


def _group_input(group: tuple[Term, ...], x: Tensor, rule: LayerRule, signed: bool, layer: Affine) -> Tensor:
    if len(group) == 1:
        return _term_input(group[0], x, rule, signed)
    return layer.pair(positive(x), negative(x))


class _LayerRelevance(torch.autograd.Function):
    """Forward: the layer's output; backward: the rule's relevance of its input."""

    @staticmethod
    def forward(ctx, x, layer: Affine, rule: LayerRule):
        y = layer(x, layer.weight, layer.bias)
        signed = bool(x.min() < 0) if any(t.input == "x-" for p in rule.parts() for t in p.terms) else True
        weights, denominators = [], []
        for part in rule.parts():
            z, used = None, []
            for group in _groups(part, signed, layer):
                term = group[0]
                w = term.weight(layer.weight)
                if len(group) == 2:
                    w = layer.pair(w, group[1].weight(layer.weight), weights=True)
                b = None if term.bias is None or layer.bias is None else term.bias(layer.bias)
                plain = term.input == "x" and term.weight is unchanged and term.bias is unchanged
                t = y if plain else layer(_group_input(group, x, rule, signed, layer), w, b)
                z = (-t if term.sign < 0 else t) if z is None else (z - t if term.sign < 0 else z + t)
                used.append(w)
            d = stabilize(z, rule.shift())
            if part.where is not None:                       # Gamma: relevance only where z has the part's sign
                d = d.masked_fill_(y <= 0 if part.where == "positive" else y >= 0, torch.inf)
            weights.append(used)
            denominators.append(d)
        ctx.layer, ctx.rule, ctx.signed, ctx.weights = layer, rule, signed, weights
        ctx.save_for_backward(x, *denominators)
        return y

    @staticmethod
    def backward(ctx, relevance):
        x, *denominators = ctx.saved_tensors
        layer, rule = ctx.layer, ctx.rule
        out = None
        for part, weights, d in zip(rule.parts(), ctx.weights, denominators, strict=True):
            s = relevance / d
            for group, w in zip(_groups(part, ctx.signed, layer), weights, strict=True):
                inp = None if group[0].input == "1" else _group_input(group, x, rule, ctx.signed, layer)
                share = layer.transposed(x if inp is None else inp, w, s)      # a new tensor: scaled in place
                if inp is not None:
                    share = share.mul_(inp)
                if len(group) == 2:
                    share = layer.unpair(share)
                factor = part.coefficient * group[0].sign
                if out is None:
                    out = share if factor == 1 else share.mul_(factor)
                else:
                    out = out.add_(share, alpha=factor)
        return out, None, None


def layer_relevance(x: Tensor, layer: Affine, rule: LayerRule) -> Tensor:
    """The layer's output on ``x``; backward turns the output's relevance into the input's by ``rule``."""
    return _LayerRelevance.apply(x, layer, rule)


class _Pass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn, inplace):
        if not inplace:
            return fn(x)
        fn(x)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None, None


def pass_relevance(fn: Callable[[Tensor], Tensor], x: Tensor, inplace: bool = False) -> Tensor:
    """``fn(x)`` (an elementwise activation; ``inplace``: ``fn`` overwrites x); backward hands R through unchanged."""
    return _Pass.apply(x, fn, inplace)


class _Sum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, stabilizer):
        y = a + b
        d = stabilize(y, stabilizer)
        ctx.shapes = a.shape, b.shape
        ctx.save_for_backward(a / d, b / d)   # shares, not the inputs: an in-place `out += x` may overwrite a
        return y

    @staticmethod
    def backward(ctx, relevance):
        share_a, share_b = ctx.saved_tensors
        (shape_a, shape_b) = ctx.shapes
        return (share_a * relevance).sum_to_size(shape_a), (share_b * relevance).sum_to_size(shape_b), None


def sum_relevance(a: Tensor, b: Tensor, stabilizer: float = STABILIZER) -> Tensor:
    """a + b (broadcast); backward splits R in proportion: R_a = a R / stab(a + b), R_b likewise."""
    return _Sum.apply(a, b, stabilizer)


class _Pool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn, stabilizer):
        y = fn(x)
        ctx.fn = fn
        ctx.save_for_backward(x, stabilize(y, stabilizer))
        return y

    @staticmethod
    def backward(ctx, relevance):
        x, d = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.fn(leaf), leaf, relevance / d)
        return x * g, None, None


def pool_relevance(fn: Callable[[Tensor], Tensor], x: Tensor, stabilizer: float = STABILIZER) -> Tensor:
    """``fn(x)``, a linear map with non-negative weights (sum, mean, average pooling); backward:
    R_in = x * J^T (R / stab(y)) (zennit's Norm)."""
    return _Pool.apply(x, fn, stabilizer)


class _Start(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y


def start_relevance(y: Tensor) -> Tensor:
    """``y`` unchanged; backward multiplies the score's gradient by y, so a class's relevance starts at its logit."""
    return _Start.apply(y)
