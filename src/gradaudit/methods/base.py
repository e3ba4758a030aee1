"""The protocol every method follows, and the base of layer (CAM-like) methods.

A method is a frozen dataclass of settings. ``method(model, inputs, target)`` validates the
arguments, puts the model in eval mode with frozen parameters (restoring it afterwards), picks
a chunk size and calls ``_explain``, the recipe each method writes on top of the engine.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..engine import as_target, auto_rows, backprop, prepared, resolve_layer, sample_sum
from ..engine.backprop import predict, predicted_classes
from ..engine.checks import check_batch_size, check_choice, check_inputs, check_model
from ..engine.packing import current_layout, packed
from ..engine.target import Target
from ..errors import NonFiniteAttribution
from ..maps import resize
from .feature_map import FeatureMap, auto_layer, check_grid


@dataclass(frozen=True)
class Method:
    """Base of all attribution methods."""

    needs_gradients: ClassVar[bool] = True

    @property
    def evaluations(self) -> int:
        """Model evaluations per example (used to size chunks of nested methods)."""
        return 1

    @property
    def linear_model(self) -> str | None:
        """What the attribution e means as a local linear model of f around x: "gradient"
        (f(x') ~ f(x) + e . (x' - x)), "contribution" (e / x is that gradient-like slope), or
        None (not a linear model: absolute values, modified backprop, CAM maps)."""
        return None

    def __call__(self, model: nn.Module, inputs, target=None, *, forward_args=(), batch_size: int | None = None):
        """Explain ``inputs`` for ``target`` (None: predicted class; int; LongTensor[B]; callable
        output -> Tensor[B]; ``ga.Contrast``).

        inputs: a tensor [B, ...], or a tuple of tensors [B, ...] for a model of several inputs
            (``model(x1, x2, ...)``); the result has the same structure.
        forward_args: extra arguments passed to the model after the inputs, not attributed (a
            tensor whose first axis is the batch follows the rows of each pass).
        batch_size: most model evaluations per pass (None: automatic under ``ga.config.memory_budget``).
        Returns tensors on the inputs' device: input-shaped for input-space methods, [B, *spatial] for
        layer methods ([B, H, W] for images, [B, L] for signals, [B, D, H, W] for volumes and video; at
        the layer's resolution when the inputs are a tuple)."""
        return self._run(model, inputs, target, batch_size, self._explain, forward_args)

    def _run(self, model, inputs, target, batch_size, body, forward_args=()):
        """Validate, prepare the model, and call ``body(model, x, target, chunk)``; several inputs
        are packed into one tensor for the body and the result unpacked (see ``engine.packing``).
        A non-finite attribution is refused (``check_finite``), never returned."""
        check_model(model)
        check_batch_size(batch_size)
        with packed(model, inputs, forward_args) as (model, x, unpack):
            x = check_inputs(x, self.needs_gradients)
            resolved = as_target(target, len(x))
            with prepared(model):
                chunk = batch_size or (auto_rows(model, x) if self.needs_gradients else len(x))
                result = body(model, x, resolved, chunk)
            check_finite(self, result[0] if isinstance(result, tuple) else result)
            return (unpack(result[0]), *result[1:]) if isinstance(result, tuple) else unpack(result)

    def _explain(self, model: nn.Module, x: Tensor, target: Target, chunk: int) -> Tensor:
        raise NotImplementedError


def check_finite(method: Method, attr: Tensor) -> None:
    """A ValueError naming ``method`` and the first example whose attribution (``attr`` [B, ...]) holds a
    NaN or an infinity."""
    finite = torch.isfinite(attr.reshape(len(attr), -1)).all(1)
    if not bool(finite.all()):
        row = int(finite.logical_not().nonzero()[0, 0])
        count = int(torch.isfinite(attr[row]).logical_not().sum())
        raise NonFiniteAttribution(f"{method!r} gave a non-finite attribution: example {row} (of {len(attr)}) holds "
                                   f"{count} NaN or infinite values (check the model's output and gradient for it; "
                                   "half precision overflows sooner)", row)


def broadcast_baseline(baseline, x: Tensor) -> Tensor:
    """A reference input shaped like ``x`` from a scalar, a tensor broadcastable to x ([B, ...] or
    [...]) or a callable ``x -> baseline``."""
    value = baseline(x) if callable(baseline) else baseline
    layout = current_layout()
    if layout is not None and isinstance(value, (tuple, list)):            # one baseline per input
        if len(value) != len(layout.shapes):
            raise ValueError(f"baseline must be a tuple of {len(layout.shapes)} baselines, one per input; got "
                             f"{len(value)}")
        try:
            value = layout.pack([torch.broadcast_to(torch.as_tensor(v, dtype=x.dtype, device=x.device),
                                                    (len(x), *shape)) for v, shape in zip(value, layout.shapes,
                                                                                          strict=True)], "baseline")
        except RuntimeError:
            raise ValueError(f"each baseline must broadcast to its input's shape {[list(s) for s in layout.shapes]}"
                             ) from None
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    try:
        return torch.broadcast_to(value, x.shape)
    except RuntimeError:
        raise ValueError(f"baseline has shape {list(value.shape)}, which does not broadcast to the inputs' shape "
                         f"{list(x.shape)}") from None


class BaselineGap:
    """``with_delta`` for methods whose attributions should sum to s(x) - s(x'), with x' the
    method's ``baseline`` field (IntegratedGradients' completeness, DeepLIFT's summation-to-delta)."""

    def with_delta(self, model, inputs, target=None, *, forward_args=(), batch_size=None) -> tuple:
        """Attributions and the gap [B]: sum(attr) - (s(x) - s(x'))."""

        def body(model, x, target, chunk):
            target = fix_target(model, x, target, chunk)
            attr = self._explain(model, x, target, chunk)
            gap = predict(model, x, target, chunk) - predict(model, broadcast_baseline(self.baseline, x), target, chunk)
            return attr, attr.flatten(1).sum(1) - gap

        return self._run(model, inputs, target, batch_size, body, forward_args)


def fix_target(model: nn.Module, x: Tensor, target: Target, chunk: int) -> Target:
    """Pin "the predicted class" to the prediction on the clean inputs (for multi-sample methods)."""
    return target.fixed(lambda: predicted_classes(model, x, chunk))


@dataclass(frozen=True)
class LayerMethod(Method):
    """A map built from the activation ``a`` and gradient ``g`` [R, C, *spatial] at ``layer``.

    layer: dotted module name (``"layer4.1.conv2"``), the module itself, or "auto": the last
        layer with a spatial output (CNN) or the last transformer block's first norm, with a
        warning naming it (see ``tokens.auto_layer``).
    upsample: resize the map to the input's spatial size (False keeps the layer's resolution).
    interpolation: "bilinear" (the papers' choice; linear along each axis, so linear on 1-D and
        trilinear on 3-D maps) or "nearest" (Captum's default).
    grid: (height, width) of the patch grid of a token layer [R, T, C] or a channels-last grid
        [R, h, w, C]; None infers it from the model's patch embedding and the input size.
    prefix: number of tokens before the patches (class, distillation, register tokens), dropped;
        None: T - height * width.
    Token and channels-last outputs are read as channels-first maps [R, C, h, w] (``tokens.FeatureMap``).
    """

    layer: str | nn.Module = None
    _: KW_ONLY
    upsample: bool = True
    interpolation: str = "bilinear"
    grid: tuple[int, int] | None = None
    prefix: int | None = None

    def __post_init__(self):
        if self.layer is None:
            raise TypeError(f"{type(self).__name__} needs a layer: a dotted module name, a module or \"auto\"")
        check_choice("interpolation", self.interpolation, ("bilinear", "nearest"))
        object.__setattr__(self, "grid", check_grid(self.grid, self.prefix))

    def _map(self, a: Tensor, g: Tensor) -> Tensor:
        """[R, *spatial] map from activation and gradient at the layer."""
        raise NotImplementedError

    def _observed(self, model: nn.Module, x: Tensor) -> tuple[tuple[str, nn.Module], FeatureMap]:
        """The layer ``(name, module)`` to observe on inputs ``x`` and how to read its output as a
        feature map; ``layer="auto"`` chooses the layer here (one survey forward, one warning)."""
        auto = isinstance(self.layer, str) and self.layer == "auto"
        layer = auto_layer(model, x, self.grid, self.prefix) if auto else resolve_layer(model, self.layer)
        return layer, FeatureMap.of(model, x, layer[0], self.grid, self.prefix)

    def _finish(self, maps: Tensor, x: Tensor) -> Tensor:
        packed_inputs = current_layout() is not None                # tuple inputs: no one input size to match
        return resize(maps, x.shape[2:], self.interpolation) if self.upsample and not packed_inputs else maps

    def _explain(self, model, x, target, chunk):
        layer, read = self._observed(model, x)

        def rows(r, e, k):
            p = backprop(model, x[e], target, e, layers=[layer], wrt_input=False)
            return (self._map(*read(p.activations[0], p.gradients[0])),)

        return self._finish(sample_sum(len(x), 1, chunk, rows, x.device)[0], x)

