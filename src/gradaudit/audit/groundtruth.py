"""Ground-truth audits: the answer is known, so an attribution can be scored without retraining.

``signal_mass`` (BlockMNIST, Shah et al. 2021): how much attribution lands on the signal block.
``signal_coordinate`` (the same paper's synthetic data): whether the largest |attribution| of
each example sits on its one informative coordinate, and whether the smallest does.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.inputs import as_examples
from ..engine.target import Contrast
from ..methods import Saliency
from ..store import Store
from .common import call_arguments, importance, per_method
from .results import AuditResult
from .stats import mean_interval


def signal_mass(methods, model: nn.Module, data, *, top: float = 0.1, limit: int | None = None,
                model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Share of |attribution| on the signal block, and share of the top-``top`` attributed pixels
    inside it, averaged over the images of ``data`` (a BlockMNIST dataset; first ``limit``), each
    with its 95% interval over images.

    A map that ignores the signal scores the block's area share (0.5 for BlockMNIST).
    """
    call = call_arguments(locals())
    data = as_examples(data)
    if not hasattr(data, "signal_mask"):
        raise TypeError("signal_mass needs data with a .signal_mask (ground truth [N, 1, H, W]), such as "
                        "data.blockmnist(...); plain (x, y) data has none")
    x, y, mask = data.x[:limit], data.y[:limit], data.signal_mask[:limit, 0]

    def compute(method, name):
        maps = importance(method, model, x, y, desc=f"signal mass {name}")
        mass = (maps * mask).sum((1, 2)) / maps.sum((1, 2)).clamp(min=1e-12)
        count = max(1, int(round(top * maps[0].numel())))
        top_pixels = maps.flatten(1).topk(count, dim=1).indices
        inside = mask.flatten(1).gather(1, top_pixels).float().mean(1)
        return {**mean_interval(mass).as_row("signal_mass"), "signal_mass_std": mass.std().item(),
                **mean_interval(inside).as_row("top_in_signal"), "images": len(x)}

    label = {"model": model_name, "top": top}
    return AuditResult("signal_mass", per_method(store, "signal_mass", methods, call, label, compute))


def margin(y: torch.Tensor) -> Contrast:
    """The target whose input gradient is the direction of the loss gradient on a binary task:
    logit(y) - logit(1 - y). Unlike the loss itself it does not vanish once p(y) rounds to 1."""
    return Contrast(y, 1 - y)


def signal_coordinate(methods=None, model: nn.Module = None, data=None, *, limit: int | None = None,
                      model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Attribution quality at level 1 on data with one signal coordinate per example (``.x`` [N, d],
    ``.y`` in {0, 1}, ``.signal`` [N]; ``data.signal_coordinates``), as in Shah et al. (2021):

    - ``p_top``: P[the largest |attribution| is the signal coordinate]
    - ``p_bottom``: P[the smallest |attribution| is the signal coordinate]
    - ``quality`` = p_top - p_bottom (+1: ideal; negative: feature inversion), with its interval
    - ``abs_cos``: mean |cos(x, attribution)| (near 1: the attribution is aligned with x)

    methods: default the input gradient of the margin (``Saliency(abs=False)`` of
    logit(y) - logit(1 - y)): the loss gradient's direction, without its float32 underflow
    once a standard net's loss reaches 0. Ties count against the method: argmax/argmin take
    the first of equal values, and a zero gradient puts coordinate 0 on top and on the bottom.
    """
    call = call_arguments(locals())
    methods = {"Gradient": Saliency(abs=False)} if methods is None else methods
    data = as_examples(data)
    if not hasattr(data, "signal"):
        raise TypeError("signal_coordinate needs data with a .signal (each example's signal coordinate), such as "
                        "data.signal_coordinates(...)")
    x, y, signal = data.x[:limit], data.y[:limit], data.signal[:limit]

    def compute(method, name):
        attribution = method(model, x, margin(y)).detach().flatten(1).double()
        size = attribution.abs()
        top = (size.argmax(1) == signal).double()
        bottom = (size.argmin(1) == signal).double()
        cos = torch.nn.functional.cosine_similarity(x.flatten(1).double(), attribution, dim=1).abs()
        return {**mean_interval(top).as_row("p_top"), **mean_interval(bottom).as_row("p_bottom"),
                **mean_interval(top - bottom).as_row("quality"), **mean_interval(cos).as_row("abs_cos"),
                "examples": len(x)}

    label = {"model": model_name}
    return AuditResult("signal_coordinate", per_method(store, "signal_coordinate", methods, call, label, compute))
