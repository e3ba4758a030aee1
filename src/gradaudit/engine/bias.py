"""Bias-gradients (FullGrad, Srinivas & Fleuret 2019): each bias times the gradient of the score at the output it
is added to.

A convolution adds its bias b_c at every location of output channel c, so the bias-gradient map of that channel is
b_c * ds/dz_c [R, *spatial]. An eval-mode BatchNorm acts as z = w (x - mean) / sqrt(var + eps) + beta, an affine
map whose bias is beta - mean * w / sqrt(var + eps): the formula of the authors' code (``tensor_extractor.py``)
and of pytorch-grad-cam's ``FullGrad.get_bias_data``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backprop import backprop
from .target import Target

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
BIASED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, *NORMS)


def effective_bias(name: str, module: nn.Module) -> Tensor | None:
    """The bias [C] ``module`` adds to each output channel in eval mode; None for a convolution without one."""
    if not isinstance(module, NORMS):
        return None if module.bias is None else module.bias.detach()
    if module.running_mean is None:
        raise ValueError(f"BatchNorm layer {name!r} keeps no running statistics (track_running_stats=False), so in "
                         "eval mode it normalises by each batch's own statistics and adds no fixed bias; FullGrad's "
                         "bias-gradients need a fixed one")
    scale = torch.rsqrt(module.running_var + module.eps)
    if module.weight is not None:
        scale = scale * module.weight.detach()
    bias = -module.running_mean * scale
    return bias if module.bias is None else bias + module.bias.detach()


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module, Tensor]]:
    """``(name, module, bias [C])`` of every convolution with a bias and every BatchNorm (Conv1d/2d/3d,
    BatchNorm1d/2d/3d), in module order; names are the user's model's inside a wrapper (``explained_model``)."""
    found = []
    for name, module in getattr(model, "explained_model", model).named_modules():
        if isinstance(module, BIASED):
            bias = effective_bias(name, module)
            if bias is not None:
                found.append((name, module, bias))
    return found


def bias_gradients(model: nn.Module, x: Tensor, target: Target, rows: Tensor,
                   layers: list[tuple[str, nn.Module, Tensor]]) -> tuple[Tensor, list[Tensor]]:
    """One forward + backward of ``x`` [R, ...]: the input gradient [R, ...] and, for each of ``layers`` (from
    ``bias_layers``), the bias-gradient b_c * ds/dz_c shaped like that layer's output [R, C, ...]."""
    p = backprop(model, x, target, rows, layers=[(name, module) for name, module, _ in layers])
    maps = [bias.to(g.dtype).view(1, -1, *(1,) * (g.ndim - 2)) * g
            for (_, _, bias), g in zip(layers, p.gradients, strict=True)]
    return p.input_grad, maps
