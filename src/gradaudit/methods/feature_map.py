"""Reading a layer's output as a feature map [R, C, *spatial], and choosing a layer (``layer="auto"``).

Layer methods work on channels-first feature maps. A convolutional layer gives one as it is
([R, C, H, W], or [R, C, L] for 1-D inputs, [R, C, D, H, W] for 3-D inputs: volumes, video). A vision
transformer's layer gives tokens [R, T, C]: T - h*w prefix tokens (class token; DeiT's distillation
token; register tokens) and then the h*w patches in row-major order. Some models (timm's Swin,
ConvNeXt's norms) give channels-last grids [R, h, w, C]. The patch grid (h, w) comes from the
model's patch embedding, the first Conv2d whose stride equals its kernel size, applied to the input
size; hierarchical models (Swin) halve it stage by stage, so its downsamplings by 2, 4, ... are
grids too. ``grid=`` and ``prefix=`` override what is inferred.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

from torch import Tensor, nn

from ..engine import resolve_layer, survey
from ..engine.packing import current_layout

DOWNSAMPLINGS = (1, 2, 4, 8, 16, 32)
NORMS = ("LayerNorm", "RMSNorm")


def check_grid(grid, prefix) -> tuple[int, int] | None:
    """Validate the ``grid`` (None or (height, width) of positive ints) and ``prefix`` (None or an
    int >= 0) overrides; return ``grid`` as a tuple."""
    if prefix is not None and (isinstance(prefix, bool) or not isinstance(prefix, numbers.Integral) or prefix < 0):
        raise ValueError(f"prefix must be None or the number of tokens before the patches (an int >= 0), "
                         f"got {prefix!r}")
    if grid is None:
        return None
    pair = tuple(grid) if isinstance(grid, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0
                                 for n in pair):
        raise ValueError(f"grid must be None or (height, width) of the patch grid, two ints > 0; got {grid!r}")
    return int(pair[0]), int(pair[1])


def _patch_embedding(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first Conv2d whose stride equals its kernel size (> 1): a vision transformer's patch embedding."""
    for name, module in getattr(model, "explained_model", model).named_modules():
        if isinstance(module, nn.Conv2d) and module.stride == module.kernel_size and max(module.stride) > 1:
            return name, module
    return None


def _conv_size(n: int, conv: nn.Conv2d, axis: int) -> int:
    padding = 0 if isinstance(conv.padding, str) else conv.padding[axis]
    kernel, stride, dilation = conv.kernel_size[axis], conv.stride[axis], conv.dilation[axis]
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class FeatureMap:
    """How the output of layer ``name`` becomes a channels-first feature map.

    grids: the patch grid of the inputs and its downsamplings, largest first (empty when the
        model has no patch embedding or the inputs are not images); ``source`` says where it
        came from, for error messages.
    image: the inputs have two spatial axes, so a 3-D layer output is tokens (with 1-D inputs it
        is a feature map [R, C, L]).
    grid, prefix: the user's overrides (None: inferred).
    """

    name: str
    grids: tuple[tuple[int, int], ...]
    source: str
    image: bool
    grid: tuple[int, int] | None = None
    prefix: int | None = None

    @classmethod
    def of(cls, model: nn.Module, x: Tensor, name: str, grid=None, prefix=None) -> FeatureMap:
        """The reading of layer ``name`` of ``model`` on inputs ``x`` [B, ...]."""
        image = x.ndim == 4 and current_layout() is None
        found = _patch_embedding(model) if image else None
        if found is None:
            reason = ("the model has no patch embedding (a Conv2d whose stride equals its kernel size)" if image
                      else "the inputs are not one batch of images [batch, channels, height, width]")
            return cls(name, (), reason, image, grid, prefix)
        conv_name, conv = found
        size = tuple(x.shape[2:])
        floor = tuple(_conv_size(n, conv, i) for i, n in enumerate(size))
        padded = tuple(-(-n // s) for n, s in zip(size, conv.stride, strict=True))   # models that pad to a multiple
        grids = []
        for base in (floor, padded):
            for factor in DOWNSAMPLINGS:
                cell = (-(-base[0] // factor), -(-base[1] // factor))
                if cell not in grids:
                    grids.append(cell)
        source = (f"the patch embedding {conv_name!r} (stride {conv.stride[0]}x{conv.stride[1]}) on inputs "
                  f"{size[0]}x{size[1]} gives a {floor[0]}x{floor[1]} grid")
        return cls(name, tuple(grids), source, image, grid, prefix)

    def arrangement(self, shape: tuple[int, ...]) -> tuple[str, int, tuple[int, ...]]:
        """(kind, prefix, spatial shape) of a layer output of ``shape`` [R, ...]: kind is
        "channels_first", "channels_last" or "tokens"; prefix the tokens dropped."""
        if len(shape) == 3 and (self.image or self.grid is not None or self.prefix is not None):
            return "tokens", *self._tokens(shape)
        if len(shape) == 4:
            return self._grid_order(shape)
        if len(shape) in (3, 5):
            return "channels_first", 0, shape[2:]
        raise ValueError(
            f"layer {self.name!r} outputs shape {list(shape)}; layer methods need [batch, "
            "channels, height, width], tokens [batch, tokens, channels] or a channels-last grid [batch, height, "
            "width, channels] (or [batch, channels, length] for 1-D inputs, [batch, channels, depth, height, width] "
            "for 3-D inputs); pick a convolutional or transformer layer")

    def _grid_order(self, shape) -> tuple[str, int, tuple[int, ...]]:
        """A 4-D output [R, ., ., .] is channels-last [R, h, w, C] only when (h, w) is a patch grid (or
        ``grid``) and [R, C, H, W] would not be: an ambiguous one stays channels-first, so
        convolutional feature maps are read exactly as before."""
        if self.prefix:
            raise ValueError(f"prefix={self.prefix} applies to token outputs [batch, tokens, channels]; layer "
                             f"{self.name!r} outputs a grid {list(shape)}")
        grids = (self.grid,) if self.grid is not None else self.grids
        last, first = tuple(shape[1:3]), tuple(shape[2:])
        if last in grids and first not in grids:
            return "channels_last", 0, last
        if self.grid is not None and first != self.grid:
            raise ValueError(f"grid={self.grid} matches neither [batch, channels, height, width] nor [batch, "
                             f"height, width, channels] for layer {self.name!r}, which outputs {list(shape)}")
        return "channels_first", 0, first

    def _tokens(self, shape) -> tuple[int, tuple[int, int]]:
        """(prefix, grid) of tokens [R, T, C]: from the overrides; else T - h*w prefix tokens before the
        patch grid (h, w) when T >= h*w (ViT, DeiT), or a downsampled grid with exactly T cells (Swin)."""
        tokens = shape[1]
        described = f"layer {self.name!r} outputs tokens {list(shape)} [batch, tokens, channels]"
        if self.grid is not None:
            prefix = tokens - math.prod(self.grid) if self.prefix is None else self.prefix
            if prefix < 0 or prefix + math.prod(self.grid) != tokens:
                raise ValueError(f"{described}, which is not prefix + height * width tokens for grid={self.grid}"
                                 + ("" if self.prefix is None else f" and prefix={self.prefix}"))
            return prefix, self.grid
        hint = ("; pass grid=(height, width) of its patches (and prefix=N for the N class, distillation or "
                "register tokens before them)")
        if not self.grids:
            raise ValueError(f"{described}, but their grid cannot be inferred: {self.source}{hint}")
        if self.prefix is not None:
            matches = [g for g in self.grids if math.prod(g) == tokens - self.prefix]
        elif tokens >= math.prod(self.grids[0]):
            return tokens - math.prod(self.grids[0]), self.grids[0]
        else:
            matches = [g for g in self.grids if math.prod(g) == tokens]
        if not matches:
            raise ValueError(f"{described}, which fits neither the patch grid nor a downsampling of it: "
                             f"{self.source}{hint}")
        return (self.prefix or 0), matches[0]

    def __call__(self, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Activation and gradient [R, ...] as channels-first maps [R, C, *spatial]; prefix tokens dropped."""
        kind, prefix, cells = self.arrangement(tuple(a.shape))
        if kind == "channels_first":
            return a, g
        if kind == "channels_last":
            return a.permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
        return tuple(t[:, prefix:].reshape(len(t), *cells, t.shape[2]).permute(0, 3, 1, 2) for t in (a, g))


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith(NORMS)


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def auto_layer(model: nn.Module, x: Tensor, grid=None, prefix=None) -> tuple[str, nn.Module]:
    """``(name, module)`` that ``layer="auto"`` means for ``model`` on inputs ``x``, with a warning naming it.

    A transformer (image inputs, LayerNorm/RMSNorm layers with token outputs [T, C] inside numbered
    blocks such as ``layers.11``): the last block's first norm. After the last block only the class
    token reaches the head, so the patch tokens of later layers have zero gradient. Otherwise the
    last layer (called once per forward) whose output is a feature map with more than one location.
    """
    outputs = [o for o in survey(model, x) if o.calls == 1 and o.shape is not None]
    blocks = [o for o in outputs if x.ndim == 4 and len(o.shape) == 2 and _is_norm(o.module)
              and _parent(o.name).rpartition(".")[2].isdigit()]
    if blocks:
        block = _parent(blocks[-1].name)
        chosen = next(o for o in blocks if _parent(o.name) == block)
        why = (f"the first norm of the last transformer block {block!r} (after that block only the class token "
               "reaches the head, so patch tokens there have zero gradient)")
    else:
        spatial = []
        for o in outputs:
            if len(o.shape) == x.ndim - 1:
                try:
                    cells = FeatureMap.of(model, x, o.name, grid, prefix).arrangement((1, *o.shape))[2]
                except ValueError:
                    continue
                if math.prod(cells) > 1:
                    spatial.append(o)
        if not spatial:
            raise ValueError("layer='auto' found no layer with a spatial output (a feature map with more than one "
                             "location, or transformer tokens); pass layer= a dotted module name")
        chosen = spatial[-1]
        why = f"the last layer with a spatial output, shape [batch, {', '.join(map(str, chosen.shape))}]"
    warnings.warn(f"layer='auto' chose {chosen.name!r}, {why}; pass layer={chosen.name!r} to choose it explicitly",
                  UserWarning, stacklevel=6)
    return resolve_layer(model, chosen.name)
