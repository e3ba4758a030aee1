"""Class sensitivity (Rebuffi, Fong, Ji & Vedaldi, CVPR 2020): do the maps change with the class?

As the authors' code computes it (ruthcfong/TorchRay, NormGrad fork: ``examples/class_selectivity.py``
and ``torchray/benchmark/common.py``): for each image, the map for the class with the highest
softmax score and the map for the class with the lowest, compared by Spearman rank correlation
of the raw map values; averaged over images. Lower = more class-sensitive; near 1 = the method
shows the same map whatever class it is asked about (as the paper finds for gradients at early
layers). Wrap a method in ``MetaStep`` for the paper's meta-saliency variant.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.inputs import as_examples
from ..engine import prepared
from ..store import Store
from .common import call_arguments, importance, per_method, spearman
from .results import AuditResult
from .stats import mean_interval


def class_sensitivity(methods, model: nn.Module, data, *, limit: int | None = 200,
                      model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Mean Spearman correlation [with its 95% interval over images] between the maps of the
    highest- and the lowest-scoring class of each of the first ``limit`` images of ``data`` (.x).

    Maps are the method's own (``heatmap`` of the attribution, no further absolute value).
    """
    call = call_arguments(locals())
    x = as_examples(data, labels=False).x[:limit]

    def compute(method, name):
        with torch.no_grad(), prepared(model):
            logits = model(x)
        top = importance(method, model, x, logits.argmax(1), desc=f"sensitivity {name}", absolute=False)
        bottom = importance(method, model, x, logits.argmin(1), desc=f"sensitivity {name}", absolute=False)
        r = spearman(top, bottom)
        return {**mean_interval(r).as_row("correlation"), "correlation_std": r.std().item(), "images": len(x)}

    label = {"model": model_name}
    return AuditResult("class_sensitivity", per_method(store, "class_sensitivity", methods, call, label, compute))
