"""CAMs weighted by the scores of changed forward passes, without gradients: ScoreCAM (the input masked by each
channel) and AblationCAM (each channel zeroed at the layer).

Each (example, channel) pair costs one forward pass; the passes run without gradients in memory-bounded chunks
(``engine.sample_scores``): as many rows as the memory budget allows for a pass without gradients, or
``masks_per_pass``, never more than ``batch_size=``. On CPU bigger passes than grad-cam's 16 are what make these
faster (``benchmarks/bench_cams.py``). Pairs whose answer is known without a pass are
not run: a constant channel's ScoreCAM mask is zero (one pass of the zero input per example stands for all of them),
and zeroing a channel that is already zero leaves the score as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import auto_rows, edited_output, predict, sample_scores, select_rows
from ..engine.checks import check_positive_int
from ..engine.packing import current_layout
from ..engine.target import Target
from .base import fix_target
from .cam import CAMMethod


def _pair_scores(model, target: Target, examples: Tensor, rows: int, inputs: Callable[[Tensor], Tensor]) -> Tensor:
    """Scores [P] of one forward per pair: pair p belongs to example ``examples[p]`` and its input is
    ``inputs(p)`` (p a LongTensor of pair ids), ``rows`` pairs per pass."""
    if not len(examples):
        return torch.zeros(0, device=examples.device)
    scores = sample_scores(select_rows(model, examples), target.select(examples), len(examples), 1, rows,
                           lambda p, _: inputs(p), examples.device)
    return scores[:, 0]


def _check_one_input(name: str, x: Tensor) -> None:
    if current_layout() is not None:
        raise ValueError(f"{name} masks or ablates one input [B, C, *spatial]; with tuple inputs use GradCAM, "
                         "LayerCAM or another gradient CAM")
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"{name} needs inputs [B, C, L], [B, C, H, W] or [B, C, D, H, W]; got {list(x.shape)}")


@dataclass(frozen=True)
class MaskedCAM(CAMMethod):
    """Base of the CAMs that weight channels by forward passes, ``masks_per_pass`` masked or ablated inputs per
    pass (None: as many as ``ga.config.memory_budget`` allows without gradients; pytorch-grad-cam's
    ``batch_size`` is 16 for ScoreCAM, 32 for AblationCAM), never more than ``batch_size=``."""

    masks_per_pass: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.masks_per_pass is not None:
            check_positive_int("masks_per_pass", self.masks_per_pass)

    def __call__(self, model, inputs, target=None, *, forward_args=(), batch_size: int | None = None):
        """As ``Method.__call__``; ``batch_size`` also caps the rows of the masked or ablated passes."""
        return self._run(model, inputs, target, batch_size,
                         lambda model, x, target, chunk: self._explain(model, x, target, chunk, batch_size),
                         forward_args)

    def _rows(self, model, x: Tensor, batch_size: int | None) -> int:
        rows = self.masks_per_pass or auto_rows(model, x, gradients=False)
        return min(rows, batch_size) if batch_size else rows


@dataclass(frozen=True)
class ScoreCAM(MaskedCAM):
    """Score-CAM (Wang et al. 2020) with pytorch-grad-cam 1.5.7's recipe. [B, *spatial].

    Each channel a_k is upsampled to the input (linear along each axis, ``align_corners=True`` as grad-cam's
    ``UpsamplingBilinear2d``) and min-max normalised to a mask m_k = (u - min u) / (max u - min u + 1e-8); the
    weights are a softmax over channels of the target's scores s(x * m_k); map = ReLU(sum_k w_k a_k).
    The score is whatever ``target`` gives, a logit by default, as in grad-cam; the paper subtracts a baseline's
    score (constant over channels, so the softmax drops it) and scores the class probability: pass
    ``target=lambda out: out.softmax(1)[:, c]`` for that. Unlike grad-cam, 1-D and 3-D inputs and token layers
    (``grid=``) work too.
    """

    def _explain(self, model, x, target, chunk, batch_size=None):
        _check_one_input("ScoreCAM", x)
        target = fix_target(model, x, target, chunk)
        a = self._activations(model, x, chunk)                               # [B, C, *spatial]
        if a.ndim != x.ndim:
            raise ValueError(f"ScoreCAM upsamples each channel of layer {self.layer!r} to the inputs' size, but its "
                             f"map has {a.ndim - 2} spatial axes and the inputs {x.ndim - 2}; pick a layer of the "
                             "inputs' rank")
        flat = a.flatten(2)
        constant = flat.amax(2) == flat.amin(2)                              # mask 0: the input becomes 0
        rows = self._rows(model, x, batch_size)
        mode = ("linear", "bilinear", "trilinear")[x.ndim - 3]

        def masked(e: Tensor, k: Tensor) -> Tensor:
            up = F.interpolate(a[e, k].unsqueeze(1), size=x.shape[2:], mode=mode, align_corners=True)
            low = up.flatten(1).amin(1).view(-1, *(1,) * (x.ndim - 1))
            high = up.flatten(1).amax(1).view_as(low)
            return x[e] * up.sub_(low).div_(high - low + 1e-8)

        scores = torch.empty(constant.shape, dtype=x.dtype, device=x.device)
        pe, pk = constant.logical_not().nonzero(as_tuple=True)
        scores[pe, pk] = _pair_scores(model, target, pe, rows, lambda p: masked(pe[p], pk[p])).to(x.dtype)
        zero = constant.any(1).nonzero()[:, 0]
        at_zero = _pair_scores(model, target, zero, rows, lambda p: torch.zeros_like(x[zero[p]])).to(x.dtype)
        ze, zk = constant.nonzero(as_tuple=True)
        scores[ze, zk] = at_zero[torch.searchsorted(zero, ze)]
        weights = scores.softmax(1).view(*scores.shape, *(1,) * (a.ndim - 2))
        return self._finish(self._relu((weights * a).sum(1)), x)


@dataclass(frozen=True)
class AblationCAM(MaskedCAM):
    """Ablation-CAM (Desai & Ramaswamy 2020): w_k = (y - y_k) / y, with y the target's score and y_k its score
    with channel k of the layer's output zeroed; map = ReLU(sum_k w_k a_k). [B, *spatial].

    Zeroing follows the paper. pytorch-grad-cam 1.5.7 zeroes only when the ablated activations' minimum is 0 and
    otherwise sets the channel to (minimum - 1e7); the two agree after a ReLU, not at layers with negative values.
    On token layers channel k of the patch tokens is zeroed (the prefix tokens are left as they are). A score
    y = 0 is refused (the weights divide by it).
    """

    def _explain(self, model, x, target, chunk, batch_size=None):
        _check_one_input("AblationCAM", x)
        target = fix_target(model, x, target, chunk)
        (_, module), read = self._observed(model, x)
        a = self._activations(model, x, chunk)
        clean = predict(model, x, target, chunk).to(x.dtype)                # [B]
        if bool((clean == 0).any()):
            row = int((clean == 0).nonzero()[0, 0])
            raise ValueError(f"AblationCAM divides by the target's score, which is exactly 0 for example {row}; "
                             "pick another target")
        live = a.flatten(2).ne(0).any(2)                                     # zeroing an all-zero channel: w = 0
        pe, pk = live.nonzero(as_tuple=True)
        ablating = {}

        def inputs(p: Tensor) -> Tensor:
            ablating["channels"] = pk[p]                 # read by the edit below, in the pass these inputs start
            return x[pe[p]]

        def zero_channel(out: Tensor) -> Tensor:
            kind, prefix, _ = read.arrangement(tuple(out.shape))
            out = out.clone()
            view = {"channels_first": lambda t: t, "channels_last": lambda t: t.permute(0, 3, 1, 2),
                    "tokens": lambda t: t[:, prefix:].transpose(1, 2)}[kind](out)
            view[torch.arange(len(out), device=out.device), ablating["channels"].to(out.device)] = 0
            return out

        ablated = clean[:, None].repeat(1, a.shape[1])
        rows = self._rows(model, x, batch_size)
        with edited_output(module, zero_channel):
            ablated[pe, pk] = _pair_scores(model, target, pe, rows, inputs).to(x.dtype)
        weights = ((clean[:, None] - ablated) / clean[:, None]).view(*ablated.shape, *(1,) * (a.ndim - 2))
        return self._finish(self._relu((weights * a).sum(1)), x)
