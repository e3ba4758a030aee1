"""Model-parameter randomization sanity check (Adebayo et al. 2018), cascading from the top."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data.inputs import as_examples
from ..keys import fingerprint
from ..store import Store
from .common import call_arguments, importance, memo, named_methods, spearman
from .results import AuditResult
from .stats import mean_interval


def _layers_top_down(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, output side first."""
    return [name for name, module in model.named_modules()
            if any(True for _ in module.parameters(recurse=False))][::-1]


def randomization(methods, model: nn.Module, data, *, limit: int | None = 100, seed: int = 0,
                  model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Re-initialise the model's layers one by one from the output down (cumulatively) and
    report the Spearman rank correlation of each map with the trained model's map.

    A method that explains the model should decorrelate as layers are randomized; one that stays
    near 1 is explaining the input, not the model. The user's model is never modified (copies).
    """
    call = call_arguments(locals())
    data = as_examples(data)
    x, y = data.x[:limit], data.y[:limit]
    layers = _layers_top_down(model)
    rows = []
    for name, method in named_methods(methods).items():
        original = None
        for depth in range(1, len(layers) + 1):
            def compute(method=method, depth=depth, name=name):
                nonlocal original
                if original is None:
                    original = importance(method, model, x, y, desc=f"sanity {name}")
                randomized = copy.deepcopy(model)
                torch.manual_seed(seed)
                modules = dict(randomized.named_modules())
                for layer in layers[:depth]:
                    modules[layer].reset_parameters()
                r = spearman(original, importance(method, randomized, x, y, desc=f"sanity {name}"))
                return {**mean_interval(r).as_row("spearman"), "spearman_std": r.std().item(), "images": len(x)}

            settings = {"model": model_name, "method": name, "randomized": "+".join(layers[:depth]), "depth": depth}
            rows.append(memo(store, "randomization", settings, {"call": call, "method": fingerprint(method, name)},
                             compute))
    return AuditResult("randomization", rows)
