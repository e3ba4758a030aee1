"""Axioms a map should satisfy: Completeness (Sundararajan et al. 2017) and Input Invariance (Kindermans et al.
2019), Quantus 0.6.0's ``Completeness`` and ``InputInvariance`` scored per image.

Completeness asks that the attributions sum to the output's change between the input and a baseline. Input
invariance asks that a constant shift of the input, undone by the first layer's bias (so the model computes the
same function of the unshifted input), leaves the map alone: the gradient passes, gradient x input does not.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..engine import auto_rows, prepared, sample_scores
from ..engine.forward import run_model
from ..engine.target import Classes
from ..maps import heatmap
from ..store import Store
from .common import call_arguments, explain_rows, finite_maps, per_method, refuse_maps
from .metrics import explained_classes, explained_maps, image_data
from .results import AuditResult
from .stats import mean_interval

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PADS = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}


def class_logits_of(model: nn.Module, x: Tensor, classes: Tensor) -> Tensor:
    """The logits [N] (float64) of ``classes`` [N] on ``x`` [N, ...], in memory-bounded chunks without gradients."""
    with prepared(model):
        chunk = auto_rows(model, x[:1], gradients=False)
        return sample_scores(model, Classes(classes), len(x), 1, chunk, lambda e, _: x[e], device=x.device)[:, 0]


def _number(value, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number ({what}); got {value!r}")
    return float(value)


def completeness(methods, model: nn.Module, data, *, baseline: float = 0.0, limit: int | None = None,
                 model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Completeness (Sundararajan et al. 2017): per image, the gap |sum_i a_i - (f(x) - f(x'))| between the
    attributions' sum (the signed attribution summed over every element; precomputed maps [N, H, W] summed as
    given) and the change of the class's logit from the all-``baseline`` image x' to x; lower is better, 0 for a
    complete method (Integrated Gradients up to its quadrature error, with the same baseline). Where we differ
    from Quantus 0.6.0 on purpose: Quantus returns ``sum a == f(x) - f(x')`` compared exactly in floating point
    (False for Integrated Gradients at any step count), after dividing the map by its maximum by default; here the
    gap itself is the score, in logits.

    Rows, one per method: ``completeness`` (mean gap with its 95% interval over images), ``completeness_each``,
    ``output_change`` (mean f(x) - f(x')), ``images``."""
    call = call_arguments(locals())
    fill = _number(baseline, "baseline", "the value of every element of the baseline image")
    data, x = image_data(data, limit)
    classes = explained_classes(model, data, x)
    change = (class_logits_of(model, x, classes) - class_logits_of(model, torch.full_like(x, fill), classes)).double()

    def compute(method, name):
        total = explained_maps(method, model, x, classes, lambda a: heatmap(a, reduce="sum"), name)
        gap = (total.flatten(1).double().sum(1) - change).abs()
        return {**mean_interval(gap).as_row("completeness"), "completeness_each": gap.tolist(),
                "output_change": change.mean().item(), "images": len(x)}

    label = {"model": model_name, "baseline": baseline}
    return AuditResult("completeness", per_method(store, "completeness", methods, call, label, compute))


def _first_layer(model: nn.Module) -> tuple[str, nn.Module]:
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, *CONVOLUTIONS)):
            return name, module
    raise ValueError("input_invariance needs a model whose first layer is a convolution or a linear layer (its bias "
                     "absorbs the shift); this model has neither")


def shifted_copy(model: nn.Module, x: Tensor, shift: float) -> nn.Module:
    """A copy of ``model`` that computes on x + ``shift`` what ``model`` computes on x (Kindermans et al. 2019,
    Sec. 3): the first convolution or linear layer's bias b becomes b - shift * W 1. A zero-padded convolution
    would see 0 rather than ``shift`` at its borders there, so in the copy it reads its input padded with
    ``shift`` instead (Quantus 0.6.0 changes only the bias, so its copy computes another function near the
    borders). The copy is checked on ``x`` [N, ...]: a model that changes the input before that layer (a
    normalisation) cannot absorb the shift there, and is refused."""
    shifted = copy.deepcopy(model)
    name, layer = _first_layer(shifted)
    if layer.bias is None:
        raise ValueError(f"input_invariance: the first layer {name!r} has no bias to absorb the shift")
    with torch.no_grad():
        layer.bias -= shift * layer.weight.flatten(1).sum(1)
    if isinstance(layer, CONVOLUTIONS) and layer.padding != "valid" and any(p != 0 for p in layer.padding):
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            raise ValueError(f"input_invariance: the first layer {name!r} pads with {layer.padding!r} "
                             f"({layer.padding_mode}); only explicit zero padding can be replaced by the shift")
        widths = [w for p in reversed(layer.padding) for w in (p, p)]
        layer.padding = (0,) * len(layer.padding)
        padded = nn.Sequential(PADS[len(widths) // 2](tuple(widths), shift), layer)
        parent, _, child = name.rpartition(".")
        setattr(shifted.get_submodule(parent) if parent else shifted, child, padded)
    rows = x[:8]
    index = torch.arange(len(rows), device=x.device)
    with prepared(model), prepared(shifted), torch.no_grad():
        before, after = run_model(model, rows, index).double(), run_model(shifted, rows + shift, index).double()
    if not torch.allclose(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item()):
        raise ValueError(f"input_invariance: changing the bias of {name!r} does not absorb a shift of the input "
                         f"(the outputs move by up to {(after - before).abs().max().item():.3g}): the model must "
                         "change its input before that layer (a normalisation?)")
    return shifted


def input_invariance(methods, model: nn.Module, data, *, shift: float = -1.0, atol: float = 1e-4, rtol: float = 1e-5,
                     limit: int | None = None, model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Input invariance (Kindermans et al. 2019), Quantus's ``InputInvariance``: an image scores 1 when the method's
    attribution (input-shaped, or a layer method's map) on the model and x equals, element by element within
    ``atol`` + ``rtol`` |a'| (``numpy.isclose``, Quantus's atol 1e-4), its attribution a' on ``shifted_copy`` and
    x + ``shift`` (Quantus's default shift -1), else 0; higher is better. The user's model is never modified.
    The gradient is invariant; gradient x input and Integrated Gradients with a zero baseline are not. Maps blind to
    the model (the controls) are invariant by construction.

    Rows, one per method: ``input_invariance`` (share of invariant images with its 95% interval),
    ``input_invariance_each``, ``relative_change`` (mean over images of ||a' - a|| / ||a||), ``images``.
    Precomputed maps are refused (the method is re-run on the shifted copy)."""
    call = call_arguments(locals())
    shift = _number(shift, "shift", "the constant added to every input element")
    refuse_maps(methods, "input_invariance", "a shifted copy of the model")
    data, x = image_data(data, limit)
    classes = explained_classes(model, data, x)
    shifted = shifted_copy(model, x, shift)

    def compute(method, name):
        before = finite_maps(explain_rows(method, model, x, classes, lambda a: a, name).double(), name)
        after = finite_maps(explain_rows(method, shifted, x + shift, classes, lambda a: a, name).double(), name)
        close = ((before - after).abs() <= atol + rtol * after.abs()).flatten(1).all(1).double()
        norm = before.flatten(1).norm(dim=1)
        change = (after - before).flatten(1).norm(dim=1) / torch.where(norm > 0, norm, torch.ones_like(norm))
        return {**mean_interval(close).as_row("input_invariance"), "input_invariance_each": close.tolist(),
                "relative_change": change.mean().item(), "images": len(x)}

    label = {"model": model_name, "shift": shift, "atol": atol, "rtol": rtol}
    return AuditResult("input_invariance", per_method(store, "input_invariance", methods, call, label, compute))
