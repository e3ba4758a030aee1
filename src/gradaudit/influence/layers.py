"""The layers influence tracks (Linear, Conv2d, GPT-2's Conv1D) and their per-example weight gradients.

A layer's parameters are seen as one matrix ``W`` [out, in] (bias appended as the last input
column, its input a constant 1), as kronfluence sees them. From a layer's input and the
gradient of a loss with respect to its output:
- Linear, and Hugging Face's ``Conv1D`` (GPT-2: ``x @ W + b`` with ``W`` [in, out], recognised by
  its ``nf`` attribute, without importing transformers; seen as the Linear of ``W^T``): rows ``a``
  [R, in] and ``g`` [R, out] over every position (all axes but the last: a token sequence
  [B, T, in] gives T rows per example, the tokens K-FAC treats as independent);
- Conv2d: ``a`` is the unfolded patches (im2col) [R, in_channels x kh x kw], ``g`` the output
  gradient per spatial position [R, out_channels], R = batch x output positions;
and each example's gradient is ``sum over its positions of g a^T`` [out, in].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.probe import resolve_layer

TRACKED = (nn.Linear, nn.Conv2d)


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D``: an ``nf`` attribute and a weight [in, nf]."""
    weight = getattr(module, "weight", None)
    return (isinstance(getattr(module, "nf", None), int) and isinstance(weight, Tensor) and weight.ndim == 2
            and weight.shape[1] == module.nf)


def trackable(module: nn.Module) -> bool:
    """Whether influence can track ``module``'s weights: a Linear, a Conv2d or a ``Conv1D``."""
    return isinstance(module, TRACKED) or is_conv1d(module)


@dataclass(frozen=True)
class Layer:
    """A tracked layer: dotted ``name``, the ``module``, and its weight matrix shape [out, in] (bias included)."""

    name: str
    module: nn.Module

    @property
    def shape(self) -> tuple[int, int]:
        weight = self.module.weight
        if is_conv1d(self.module):
            return weight.shape[1], weight.shape[0] + (self.module.bias is not None)
        return weight.shape[0], weight[0].numel() + (self.module.bias is not None)

    @property
    def size(self) -> int:
        out, inp = self.shape
        return out * inp

    def rows(self, inputs: Tensor) -> Tensor:
        """The layer's inputs as rows [B, P, in] (P positions per example; a ones column for the bias)."""
        if isinstance(self.module, nn.Conv2d):
            a = F.unfold(inputs, self.module.kernel_size, dilation=self.module.dilation,
                         padding=_padding(self.module), stride=self.module.stride).transpose(1, 2)
        else:
            a = inputs.reshape(len(inputs), -1, inputs.shape[-1])
        if self.module.bias is not None:
            a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2)
        return a

    def output_rows(self, grads: Tensor) -> Tensor:
        """The output gradients as rows [B, P, out], P matching ``rows``."""
        if isinstance(self.module, nn.Conv2d):
            return grads.flatten(2).transpose(1, 2)
        return grads.reshape(len(grads), -1, grads.shape[-1])

    def per_example(self, inputs: Tensor, grads: Tensor) -> Tensor:
        """Per-example gradients [B, out, in] of the loss whose output gradients are ``grads``."""
        return torch.einsum("bpo,bpi->boi", self.output_rows(grads), self.rows(inputs))


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Conv2d padding as two ints for ``unfold`` ("valid" is 0, "same" is half the dilated kernel)."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation, strict=True))
    return conv.padding


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    if conv.groups != 1:
        raise ValueError(f"layer {name!r} is a grouped Conv2d (groups={conv.groups}); influence tracks only "
                         "ungrouped convolutions: leave it out with layers=[...]")
    if conv.padding_mode != "zeros":
        raise ValueError(f"layer {name!r} pads with {conv.padding_mode!r}; influence tracks only zero-padded "
                         "convolutions: leave it out with layers=[...]")
    if conv.padding == "same" and any(d * (k - 1) % 2 for k, d in zip(conv.kernel_size, conv.dilation, strict=True)):
        raise ValueError(f"layer {name!r} uses padding='same' with an even kernel (unequal padding); leave it out "
                         "with layers=[...]")


def tracked_layers(model: nn.Module, layers=None) -> list[Layer]:
    """The Linear, Conv2d and ``Conv1D`` layers of ``model`` to track: all of them (``layers=None``) or those
    named (dotted names or modules); a ValueError for a model without any, a name it lacks or another module type."""
    if layers is None:
        found = [(name, module) for name, module in model.named_modules() if trackable(module)]
        if not found:
            raise ValueError("model has no nn.Linear or nn.Conv2d layer (nor a Hugging Face Conv1D); influence tracks "
                             "the weights of those layers")
    else:
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        found = [resolve_layer(model, layer) for layer in layers]
        if not found:
            raise ValueError("layers is empty; pass None (every Linear and Conv2d layer) or layer names")
        for name, module in found:
            if not trackable(module):
                raise ValueError(f"layers: {name!r} is a {type(module).__name__}; influence tracks nn.Linear, "
                                 "nn.Conv2d and Hugging Face Conv1D layers")
        names = [name for name, _ in found]
        if len(set(names)) != len(names):
            raise ValueError(f"layers names a layer twice: {names}")
    for name, module in found:
        if isinstance(module, nn.Conv2d):
            _check_conv(name, module)
    return [Layer(name, module) for name, module in found]
