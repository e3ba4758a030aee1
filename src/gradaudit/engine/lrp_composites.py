"""LRP composites for CNNs and MLPs: which rule each layer gets, BatchNorm folded into the layer before it, and
the mode that applies the rules (``engine.lrp_layers``) during a forward. zennit 0.5.1's composites and canonizer,
written here:

- Composites (zennit's names): "EpsilonPlus" (z+ on convolutions, epsilon on dense layers), "EpsilonPlusFlat"
  (the same, flat on the first dense or convolutional layer), "EpsilonAlpha2Beta1" (alpha=2, beta=1 on
  convolutions), "EpsilonAlpha2Beta1Flat", "EpsilonGammaBox" (z^B on the first convolution, gamma on the others,
  epsilon on dense layers). "First" is the first such layer the model registers (zennit's order), and it must
  be the first to run. ``overrides`` give a rule to a layer name or a module type; names win over types, both
  over the composite.
- BatchNorm (zennit's SequentialMergeBatchNorm): a BatchNorm registered right after a dense or convolutional
  layer, and fed that layer's output, is folded into it (W' = W gamma / sqrt(var + eps), b' = (b - mean) gamma /
  sqrt(var + eps) + beta) for the rule, and then passes its input on. Nothing of the model is changed: the
  folded weights exist only in the pass.
- Elementwise activations pass relevance through; additions of two activations (a residual ``x + y``), sums,
  means and average pools split it in proportion (zennit's Norm: the rule of its ``Sum`` layer, which its ResNet
  canonizer puts in place of the addition; on a plain ``+`` zennit uses the gradient, which hands the whole
  relevance to both branches); max-pooling, reshapes, concatenation, indexing and padding route it as their
  gradient does (as zennit).
- Anything else that carries relevance (a normalisation that cannot be folded, a product or a division of
  activations, an addition of a constant, softmax, attention, a dense or convolution call outside its module)
  is named in ``mode.missing()``, and ``backprop`` refuses the pass: never the plain gradient in its place.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .lrp_layers import (
    Affine,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    LayerRule,
    WSquare,
    ZBox,
    ZPlus,
    layer_relevance,
    pass_relevance,
    pool_relevance,
    start_relevance,
    sum_relevance,
)
from .probe import first_tensor

DENSE = (nn.Linear,)
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LAYERS = DENSE + CONVOLUTIONS
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

# name: (the first layer's types and rule, or None; the convolutions' rule; the dense layers' rule)
COMPOSITES = {
    "EpsilonPlus": (None, "zplus", "epsilon"),
    "EpsilonPlusFlat": ((LAYERS, "flat"), "zplus", "epsilon"),
    "EpsilonAlpha2Beta1": (None, "alpha2beta1", "epsilon"),
    "EpsilonAlpha2Beta1Flat": ((LAYERS, "flat"), "alpha2beta1", "epsilon"),
    "EpsilonGammaBox": ((CONVOLUTIONS, "zbox"), "gamma", "epsilon"),
}
RULE_NAMES = ("epsilon", "zplus", "alpha2beta1", "alpha1beta0", "gamma", "flat", "wsquare", "zbox")


@dataclass(frozen=True)
class Composite:
    """The rules of one LRP pass: composite ``name`` (``COMPOSITES``), the settings its rules take (``epsilon`` of
    the epsilon rule, ``gamma``, the box bounds ``low``/``high``) and ``overrides``: ((layer name or module type,
    rule name or ``LayerRule``), ...)."""

    name: str = "EpsilonPlus"
    epsilon: float = 1e-6
    gamma: float = 0.25
    low: object = None
    high: object = None
    overrides: tuple = ()

    def __post_init__(self):
        if self.name not in COMPOSITES:
            raise ValueError(f"composite must be one of {', '.join(map(repr, COMPOSITES))}; got {self.name!r}")
        first, conv, dense = COMPOSITES[self.name]
        for rule in (conv, dense, *(first[1:] if first else ()), *(r for _, r in self.overrides)):
            self.rule(rule)

    def rule(self, value) -> LayerRule:
        """A ``LayerRule`` from a rule name (with this composite's settings) or as it is."""
        if isinstance(value, LayerRule):
            return value
        if not isinstance(value, str) or value not in RULE_NAMES:
            raise ValueError(f"an LRP rule must be one of {', '.join(map(repr, RULE_NAMES))} or a rule object "
                             f"(Epsilon, ZPlus, AlphaBeta, Gamma, Flat, WSquare, ZBox); got {value!r}")
        return {"epsilon": lambda: Epsilon(self.epsilon), "zplus": ZPlus, "alpha2beta1": lambda: AlphaBeta(2.0, 1.0),
                "alpha1beta0": lambda: AlphaBeta(1.0, 0.0), "gamma": lambda: Gamma(self.gamma), "flat": Flat,
                "wsquare": WSquare, "zbox": lambda: ZBox(self.low, self.high)}[value]()


@dataclass
class Plan:
    """Each rule-bearing module's rule, the BatchNorms folded into (-> from) their layers, the module that got
    the composite's first-layer rule (None: none) and every module's name."""

    rules: dict = field(default_factory=dict)
    folds: dict = field(default_factory=dict)
    first: nn.Module | None = None
    names: dict = field(default_factory=dict)

    @property
    def folded(self) -> dict:
        """{layer: the BatchNorm folded into it}."""
        return {layer: bn for bn, layer in self.folds.items()}


def plan(composite: Composite, model: nn.Module) -> Plan:
    """The rules of ``composite`` for ``model``'s layers (a ValueError for an override that catches nothing)."""
    user = getattr(model, "explained_model", model)
    names = {module: name for name, module in model.named_modules()} | {
        module: name or type(user).__name__ for name, module in user.named_modules()}
    leaves = [(name, m) for name, m in user.named_modules() if next(m.children(), None) is None]
    layers = [(name, m) for name, m in leaves if isinstance(m, LAYERS)]
    if not layers:
        raise ValueError(f"LRP needs dense or convolutional layers (nn.Linear, nn.ConvNd, nn.ConvTransposeNd); "
                         f"{type(user).__name__} has none")
    first, conv, dense = COMPOSITES[composite.name]
    result = Plan(names=names)
    for _, m in layers:
        result.rules[m] = composite.rule(conv if isinstance(m, CONVOLUTIONS) else dense)
    if first is not None:
        types, rule = first
        found = next((m for _, m in layers if isinstance(m, types)), None)
        if found is None:
            raise ValueError(f"composite {composite.name!r} gives {rule!r} to the first convolution, and this model "
                             "has none; choose a composite without it (EpsilonPlus, EpsilonAlpha2Beta1)")
        result.rules[found], result.first = composite.rule(rule), found
    _apply_overrides(composite, user, layers, result)
    for (_, before), (_, after) in zip(leaves, leaves[1:], strict=False):
        if isinstance(before, LAYERS) and isinstance(after, BATCH_NORMS) and after.running_mean is not None:
            result.folds[after] = before
    return result


def _apply_overrides(composite: Composite, user: nn.Module, layers, result: Plan) -> None:
    modules = dict(user.named_modules())
    by_name = [(k, r) for k, r in composite.overrides if isinstance(k, str)]
    by_type = [(k, r) for k, r in composite.overrides if not isinstance(k, str)]
    for key, rule in by_type + by_name:               # names last: they win over types
        if isinstance(key, str):
            if not isinstance(modules.get(key), LAYERS):
                what = "not a module of the model" if key not in modules else f"a {type(modules[key]).__name__}"
                raise ValueError(f"rules: {key!r} is {what}; rules apply to dense and convolutional layers by name "
                                 f"({', '.join(n for n, _ in layers[:8])}, ...) or by type")
            hits = [modules[key]]
        elif isinstance(key, type) and issubclass(key, LAYERS):
            hits = [m for _, m in layers if isinstance(m, key)]
            if not hits:
                raise ValueError(f"rules: no layer of the model is a {key.__name__}, so its rule catches nothing")
        else:
            raise ValueError(f"rules: keys must be layer names or dense/convolution module types, got {key!r}")
        for m in hits:
            result.rules[m] = composite.rule(rule)
            if m is result.first:
                result.first = None


_LINEAR_PARAMS = ("input", "weight", "bias")
_CONV_PARAMS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_TRANSPOSED_PARAMS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_LAYER_CALLS = {F.linear: _LINEAR_PARAMS, F.conv1d: _CONV_PARAMS, F.conv2d: _CONV_PARAMS, F.conv3d: _CONV_PARAMS,
                F.conv_transpose1d: _TRANSPOSED_PARAMS, F.conv_transpose2d: _TRANSPOSED_PARAMS,
                F.conv_transpose3d: _TRANSPOSED_PARAMS}
_LAYER_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1, "output_padding": 0}


def _named(names, group) -> set:
    return {getattr(group, n) for n in names.split() if hasattr(group, n)}


_ACTIVATIONS = _named("relu relu_ leaky_relu leaky_relu_ elu elu_ celu celu_ selu selu_ gelu silu mish relu6 hardtanh "
                      "hardtanh_ prelu hardswish hardsigmoid logsigmoid softplus softsign tanhshrink threshold "
                      "threshold_ hardshrink softshrink rrelu rrelu_ sigmoid tanh", F) | _named(
    "relu relu_ sigmoid sigmoid_ tanh tanh_ prelu selu selu_ celu celu_ rrelu rrelu_ threshold threshold_", torch) | (
    _named("relu relu_ sigmoid sigmoid_ tanh tanh_", torch.Tensor))
_ADDITIONS = _named("add", torch) | _named("add add_ __add__ __radd__ __iadd__", torch.Tensor)
_POOLS = _named("sum mean", torch) | _named("sum mean", torch.Tensor) | _named(
    "avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d", F)
_ROUTING = _named("view view_as reshape reshape_as flatten unflatten permute transpose t squeeze unsqueeze contiguous "
                  "clone expand expand_as __getitem__ narrow select index_select split chunk unbind to float double "
                  "half bfloat16 type type_as flip roll movedim swapaxes repeat", torch.Tensor) | _named(
    "flatten reshape cat concat concatenate stack split chunk unbind narrow select index_select transpose permute "
    "squeeze unsqueeze movedim flip roll clone", torch) | _named(
    "pad max_pool1d max_pool2d max_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d pixel_shuffle "
    "pixel_unshuffle", F)
_DROPOUTS = _named("dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout", F)
_ROUTES = _ROUTING | _DROPOUTS


def _carries(obj) -> bool:
    """Whether ``obj`` (a tensor, or a list or tuple of them) carries gradient."""
    if isinstance(obj, Tensor):
        return obj.requires_grad
    return isinstance(obj, (list, tuple)) and any(_carries(o) for o in obj)


@functools.cache
def _signature(func) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _bound(func, args, kwargs) -> dict | None:
    """``func``'s arguments by name (None where it has no Python signature)."""
    signature = _signature(func)
    try:
        bound = signature.bind(*args, **kwargs)
    except (AttributeError, TypeError):
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def _in_place(func, args, kwargs) -> bool:
    """Whether an activation call overwrites its input (``relu_``, ``inplace=True``)."""
    name = getattr(func, "__name__", "")
    if name.endswith("_") and not name.startswith("__"):
        return True
    return bool((_bound(func, args, kwargs) or {}).get("inplace", False))


def _fold(weight: Tensor, bias: Tensor | None, bn: nn.Module, transposed: bool, groups: int):
    """(weight, bias) of the layer followed by the BatchNorm ``bn`` (eval statistics), as zennit's canonizer."""
    scale = (bn.weight if bn.weight is not None else 1.0) / (bn.running_var + bn.eps) ** .5
    shift = bn.bias if bn.bias is not None else 0.0
    bias = (0.0 if bias is None else bias) - bn.running_mean
    trailing = (1,) * (weight.ndim - 2)
    if transposed:                                   # weight [in, out / groups, *kernel]
        grouped = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
        weight = (grouped * scale.reshape(groups, 1, -1, *trailing)).reshape(weight.shape)
    else:
        weight = weight * scale.reshape(-1, 1, *trailing)
    return weight, bias * scale + shift


def _padded(x: Tensor, weight: Tensor, padding, dilation):
    """(x, padding as ints) for a convolution's string padding ("same" pads x itself where it is uneven)."""
    if padding == "valid":
        return x, 0
    kernel = weight.shape[2:]
    dilation = [dilation] * len(kernel) if isinstance(dilation, int) else list(dilation)
    totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
    if all(t % 2 == 0 for t in totals):
        return x, [t // 2 for t in totals]
    sides = [p for t in reversed(totals) for p in (t // 2, t - t // 2)]
    return F.pad(x, sides), 0


class _CompositeMode(TorchFunctionMode):
    """Applies ``plan`` to the forwards run inside, while one of the model's modules is running (``stack``);
    ``applied`` counts the layers given a rule, ``unsupported`` names what carried relevance without one."""

    def __init__(self, plan: Plan, composite: Composite):
        super().__init__()
        self.plan, self.composite, self.folded = plan, composite, plan.folded
        self.stack: list[nn.Module] = []
        self.applied = 0
        self.first_run: nn.Module | None = None
        self.unsupported: dict[str, None] = {}
        self.outputs: dict[nn.Module, tuple[Tensor, int]] = {}
        self.awaiting: set[nn.Module] = set()          # folded layers whose BatchNorm has not yet taken their output

    def _where(self) -> str:
        module = self.stack[-1]
        return f"{self.plan.names.get(module, '?')!r} ({type(module).__name__})"

    def _refuse(self, what: str) -> None:
        self.unsupported.setdefault(f"{what} in {self._where()}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.stack or not (_carries(args) or _carries(tuple(kwargs.values()))):
            return func(*args, **kwargs)
        if func in _LAYER_CALLS:
            return self._layer(func, args, kwargs)
        if func is F.batch_norm:
            return self._batch_norm(func, args, kwargs)
        if func in _ACTIVATIONS:
            return pass_relevance(lambda t: func(t, *args[1:], **kwargs), args[0], _in_place(func, args, kwargs))
        if func in _ADDITIONS:
            return self._addition(func, args, kwargs)
        if func in _POOLS:
            return pool_relevance(lambda t: func(t, *args[1:], **kwargs), args[0])
        out = func(*args, **kwargs)
        if func in _DROPOUTS and (_bound(func, args, kwargs) or {}).get("training"):
            self._refuse("dropout in training mode")
        elif func not in _ROUTES and _carries(out):
            self._refuse(getattr(func, "__name__", repr(func)))
        return out

    def _layer(self, func, args, kwargs):
        module = self.stack[-1]
        rule = self.plan.rules.get(module)
        arguments = dict(_LAYER_DEFAULTS) | dict(zip(_LAYER_CALLS[func], args, strict=False)) | kwargs
        if not arguments["input"].requires_grad:                 # not on the relevance path
            return func(*args, **kwargs)
        if rule is None:
            self._refuse(f"{func.__name__} outside a dense or convolution module (no LRP rule)")
            return func(*args, **kwargs)
        x, weight, bias = arguments["input"], arguments["weight"], arguments["bias"]
        conv = None
        if func is not F.linear:
            transposed = _LAYER_CALLS[func] is _TRANSPOSED_PARAMS
            padding = arguments["padding"]
            if isinstance(padding, str):
                x, padding = _padded(x, weight, padding, arguments["dilation"])
            nd = weight.ndim - 2
            conv = tuple([v] * nd if isinstance(v, int) else list(v) for v in (
                arguments["stride"], padding, arguments["dilation"])) + (
                transposed, [arguments["output_padding"]] * nd if isinstance(arguments["output_padding"], int)
                else list(arguments["output_padding"]), arguments["groups"])
        bn = self.folded.get(module)
        if bn is not None:
            if conv is None and x.ndim != 2:
                self._refuse(f"BatchNorm after a dense layer on {x.ndim}-D inputs (only [B, features] folds)")
                return func(*args, **kwargs)
            weight, bias = _fold(weight, bias, bn, conv is not None and conv[3], arguments["groups"])
            self.awaiting.add(module)
        self.applied += 1
        if self.first_run is None:
            self.first_run = module
        y = layer_relevance(x, Affine(weight, bias, conv), rule)
        self.outputs[module] = (y, y._version)
        return y

    def _batch_norm(self, func, args, kwargs):
        module, x = self.stack[-1], args[0]
        layer = self.plan.folds.get(module)
        made = self.outputs.get(layer)
        if made is None or made[0] is not x or x._version != made[1]:
            self._refuse("a BatchNorm that does not directly follow a dense or convolutional layer (registered "
                         "right before it and fed its output), or without running statistics, so it cannot be "
                         "folded into one")
            return func(*args, **kwargs)
        self.awaiting.discard(layer)
        return x                                          # folded into the layer before it

    def _addition(self, func, args, kwargs):
        arguments = list(args) + [kwargs.get("other")] if "other" in kwargs else list(args)
        if len(arguments) != 2 or not all(isinstance(a, Tensor) and a.requires_grad for a in arguments) or (
                kwargs.get("alpha", 1) != 1):
            self._refuse("an addition of a constant (relevance would vanish into it: a bias outside a layer) or a "
                         "scaled addition (alpha)")
            return func(*args, **kwargs)
        a, b = arguments
        y = sum_relevance(a, b)
        return a.copy_(y) if func in (torch.Tensor.add_, torch.Tensor.__iadd__) else y

    def missing(self) -> str | None:
        """Why the rules cannot explain this forward (None when they can)."""
        if self.unsupported:
            found = list(self.unsupported)
            return (f"LRP has no rule for {'; '.join(found[:3])}{' and more' if len(found) > 3 else ''}: it would "
                    "pass the plain gradient there. Supported: nn.Linear, nn.ConvNd, nn.ConvTransposeNd (BatchNorm "
                    "right after one is folded into it), elementwise activations, additions of two activations, "
                    "sums, means, average and max pooling, reshapes, concatenation, indexing, padding, eval dropout")
        if self.awaiting:
            layer = next(iter(self.awaiting))
            return (f"the BatchNorm registered after {self.plan.names[layer]!r} was folded into it, but never took "
                    "its output in this forward, so the layer's output would be wrong")
        if not self.applied:
            return "LRP applied no rule: no dense or convolutional layer ran on the relevance path in this forward"
        if self.plan.first is not None and self.first_run is not self.plan.first:
            names = self.plan.names
            return (f"composite {self.composite.name!r} gives its first-layer rule to {names[self.plan.first]!r}, "
                    f"the first such layer the model registers (zennit's order), but {names[self.first_run]!r} ran "
                    "first; name the layer in rules= instead")
        return None


@contextmanager
def composite_rules(composite: Composite, model: nn.Module):
    """The rules of ``composite`` on ``model``'s forwards run inside (see the module docstring); yields the mode
    (``.missing()`` says what the forward had that no rule covers). Hooks are removed on exit; nothing of the
    model is modified."""
    mode = _CompositeMode(plan(composite, model), composite)
    handles = []

    def enter(module, _inputs):
        mode.stack.append(module)

    def leave(module, _inputs, _output):
        if mode.stack and mode.stack[-1] is module:
            mode.stack.pop()

    def start(_module, _inputs, output):
        tensor, put_back = first_tensor(output)
        return put_back(start_relevance(tensor)) if tensor.requires_grad else output

    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
        handles.append(model.register_forward_hook(start))
        with mode:
            yield mode
    finally:
        for handle in handles:
            handle.remove()
