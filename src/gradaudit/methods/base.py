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
from ..maps import resize


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
        Returns tensors on the inputs' device: input-shaped for input-space methods, [B, H, W] for
        layer methods (at the layer's resolution when the inputs are a tuple)."""
        return self._run(model, inputs, target, batch_size, self._explain, forward_args)

    def _run(self, model, inputs, target, batch_size, body, forward_args=()):
        """Validate, prepare the model, and call ``body(model, x, target, chunk)``; several inputs
        are packed into one tensor for the body and the result unpacked (see ``engine.packing``)."""
        check_model(model)
        check_batch_size(batch_size)
        with packed(model, inputs, forward_args) as (model, x, unpack):
            x = check_inputs(x, self.needs_gradients)
            resolved = as_target(target, len(x))
            with prepared(model):
                chunk = batch_size or (auto_rows(model, x) if self.needs_gradients else len(x))
                result = body(model, x, resolved, chunk)
            return (unpack(result[0]), *result[1:]) if isinstance(result, tuple) else unpack(result)

    def _explain(self, model: nn.Module, x: Tensor, target: Target, chunk: int) -> Tensor:
        raise NotImplementedError


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

    layer: dotted module name (``"layer4.1.conv2"``) or the module itself.
    upsample: resize the map to the input's spatial size (False keeps the layer's resolution).
    interpolation: "bilinear" (the papers' choice) or "nearest" (Captum's default).
    """

    layer: str | nn.Module = None
    _: KW_ONLY
    upsample: bool = True
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.layer is None:
            raise TypeError(f"{type(self).__name__} needs a layer: a dotted module name or a module")
        check_choice("interpolation", self.interpolation, ("bilinear", "nearest"))

    def _map(self, a: Tensor, g: Tensor) -> Tensor:
        """[R, *spatial] map from activation and gradient at the layer."""
        raise NotImplementedError

    def _layer(self, model: nn.Module):
        return resolve_layer(model, self.layer)

    def _finish(self, maps: Tensor, x: Tensor) -> Tensor:
        packed_inputs = current_layout() is not None                # tuple inputs: no one input size to match
        return resize(maps, x.shape[2:], self.interpolation) if self.upsample and not packed_inputs else maps

    def _explain(self, model, x, target, chunk):
        layer = self._layer(model)

        def rows(r, e, k):
            p = backprop(model, x[e], target, e, layers=[layer], wrt_input=False)
            return (self._map(*spatial(layer[0], p.activations[0], p.gradients[0])),)

        return self._finish(sample_sum(len(x), 1, chunk, rows, x.device)[0], x)


def spatial(name: str, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Check a layer output is [R, C, *spatial] (1-D or 2-D spatial) and return (a, g)."""
    if a.ndim not in (3, 4):
        raise ValueError(
            f"layer {name!r} outputs shape {list(a.shape)}; layer methods need [batch, channels, "
            "height, width] (or [batch, channels, length]); pick a convolutional layer"
        )
    return a, g

