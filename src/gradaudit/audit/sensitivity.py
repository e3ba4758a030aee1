"""Class sensitivity (Rebuffi et al. 2020): do the maps change with the class explained?"""

from __future__ import annotations

import torch
from torch import nn

from ..store import Store
from .common import importance, memo, named_methods, pearson
from .results import AuditResult


def class_sensitivity(methods, model: nn.Module, data, *, limit: int | None = 200,
                      model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Pearson correlation between the map for the top-scoring class and the map for the
    lowest-scoring class of each image, averaged (our reading of the paper's metric).

    Low correlation = class-sensitive; near 1 = the method shows the same map whatever class
    it is asked about (as the paper finds for gradients at early layers).
    """
    x = data.x[:limit]
    rows = []
    for name, method in named_methods(methods).items():
        def compute(method=method):
            with torch.no_grad():
                logits = model.eval()(x)
            top = importance(method, model, x, logits.argmax(1), desc=f"sensitivity {name}")
            bottom = importance(method, model, x, logits.argmin(1), desc=f"sensitivity {name}")
            r = pearson(top, bottom)
            return {"correlation": r.mean().item(), "correlation_std": r.std().item(), "images": len(x)}

        rows.append(memo(store, "class_sensitivity", {"model": model_name, "method": name}, compute))
    return AuditResult("class_sensitivity", rows)
