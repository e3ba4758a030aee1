"""Train many small models at once as one vectorised ensemble (torch.func + vmap).

ROAR needs one fresh model per method x fraction x top/bottom x repeat. Their parameters are
stacked along a leading model axis and trained together: one vmapped forward/backward per
step for all models, Adam on the stacked tensors. Adam is elementwise and each model's loss
depends only on its own slice, so this equals training each model alone on the same seed
and the same batches (tested).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from .fit import batch_order


def fit_ensemble(model_fn: Callable[[], nn.Module], x: Tensor, y: Tensor, keep: Tensor, fill: float,
                 seeds: list[int], epochs: int = 3, lr: float = 1e-3, batch_size: int = 64) -> list[nn.Module]:
    """Train ``len(seeds)`` models, model m on the masked images ``where(keep[m], x, fill)``.

    model_fn: builds one fresh model (called under ``torch.manual_seed(seed)``).
    x [N, ...], y [N]: the shared training set; keep [M, N, ...] bool: what model m sees.
    seeds: one per model; fixes its initialisation and its batch order.
    """
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(model_fn())
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")

    def loss_one(p, b, xb, yb):
        return F.cross_entropy(functional_call(skeleton, (p, b), (xb,)), yb)

    loss_all = vmap(loss_one)
    optimiser = torch.optim.Adam(list(params.values()), lr=lr)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    for epoch in range(epochs):
        orders = [batch_order(len(y), batch_size, g) for g in generators]
        for step in tqdm(range(len(orders[0])), desc=f"ensemble of {len(seeds)}, epoch {epoch + 1}/{epochs}",
                         leave=False, mininterval=1.0, disable=None):
            index = torch.stack([order[step] for order in orders])          # [M, b]
            model_axis = torch.arange(len(seeds)).view(-1, 1)
            xb = torch.where(keep[model_axis, index], x[index], torch.as_tensor(fill, dtype=x.dtype))
            optimiser.zero_grad(set_to_none=True)
            loss_all(params, buffers, xb, y[index]).sum().backward()
            optimiser.step()
    for m, model in enumerate(models):
        model.load_state_dict({name: value[m].detach() for name, value in {**params, **buffers}.items()})
        model.eval()
    return models


@torch.no_grad()
def ensemble_accuracy(models: list[nn.Module], x: Tensor, y: Tensor, keep: Tensor, fill: float,
                      batch_size: int = 512) -> Tensor:
    """Accuracy [M] of model m on its own masked test set ``where(keep[m], x, fill)``."""
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    predict = vmap(lambda p, b, xb: functional_call(skeleton, (p, b), (xb,)).argmax(1))
    correct = torch.zeros(len(models))
    for start in range(0, len(y), batch_size):
        xb = torch.where(keep[:, start:start + batch_size], x[start:start + batch_size],
                         torch.as_tensor(fill, dtype=x.dtype))
        correct += (predict(params, buffers, xb) == y[start:start + batch_size]).sum(1)
    return correct / len(y)
