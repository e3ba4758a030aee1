"""ROAD without retraining (Rong et al., ICML 2022): MoRF / LeRF accuracy curves.

The audited model classifies images whose most relevant (MoRF) or least relevant (LeRF)
pixels, by |attribution|, have been replaced by ROAD's noisy linear imputation. A faithful
attribution makes accuracy fall fast under MoRF and slowly under LeRF; the gap between the
curves is the score. No model is retrained, so this is cheap next to DiffROAR.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.inputs import as_examples
from ..engine import prepared
from ..engine.backprop import predicted_classes
from ..keys import fingerprint
from ..store import Store
from .common import call_arguments, importance, keep_masks, memo, named_methods, rank_pixels
from .imputation import noisy_linear_impute
from .results import AuditResult
from .stats import mean_interval


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """1.0 where ``model`` (in eval mode, restored afterwards) classifies x correctly, else 0.0; [N]."""
    with prepared(model):
        return (predicted_classes(model, x, batch) == y).double()


def road(methods, model: nn.Module, data, *, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), limit: int | None = 200,
         noise: float = 0.01, seed: int = 0, model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Accuracy of ``model`` on the first ``limit`` images of ``data`` (.x, .y) with the top
    (MoRF) or bottom (LeRF) ``fraction`` of each image's pixels imputed away, per method.

    Rows: one per (method, fraction) with ``morf_accuracy``, ``lerf_accuracy`` and ``gap`` (LeRF - MoRF,
    paired per image), each with its 95% interval over images, and the per-image values (1.0 correct, 0.0
    wrong) ``morf_accuracy_each`` and ``lerf_accuracy_each``, images in order.
    """
    call = call_arguments(locals(), units=("fractions",))
    data = as_examples(data)
    x, y = data.x[:limit], data.y[:limit]
    rows = []
    for name, method in named_methods(methods).items():
        ranks = None
        for k in fractions:
            def compute(k=k, method=method, name=name):
                nonlocal ranks
                if ranks is None:
                    ranks = rank_pixels(importance(method, model, x, y, desc=f"ROAD {name}"), seed)
                correct = {}
                for order, top in (("MoRF", True), ("LeRF", False)):
                    removed = keep_masks(ranks, k, top).view(len(x), *x.shape[2:])
                    correct[order] = _correct(model, noisy_linear_impute(x, removed, noise=noise, seed=seed), y)
                return {**mean_interval(correct["MoRF"]).as_row("morf_accuracy"),
                        **mean_interval(correct["LeRF"]).as_row("lerf_accuracy"),
                        **mean_interval(correct["LeRF"] - correct["MoRF"]).as_row("gap"),
                        "morf_accuracy_each": correct["MoRF"].tolist(), "lerf_accuracy_each": correct["LeRF"].tolist()}

            rows.append(memo(store, "road", {"model": model_name, "method": name, "fraction": k},
                             {"call": call, "method": fingerprint(method, name)}, compute))
    return AuditResult("road", rows)
