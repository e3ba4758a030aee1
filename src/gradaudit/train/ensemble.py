"""Train many small models at once as one vectorised ensemble (torch.func + vmap).

ROAR needs one fresh model per method x fraction x top/bottom x repeat, and an honest
comparison of training regimes needs several seeds of each audited model. Their parameters
are stacked along a leading model axis and trained together: one vmapped forward/backward
per step for all models, one optimizer on the stacked tensors. Every optimizer of ``Recipe``
is elementwise and each model's loss depends only on its own slice, so this equals training
each model alone with the same recipe, seed and batches (tested).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from .fit import batch_order
from .pgd import PGD
from .recipe import Recipe


class _Stacked(nn.Module):
    """M stacked models as one module on flattened rows: [M * b, ...] -> [M * b, classes]
    (rows m*b .. (m+1)*b - 1 go to model m). Lets PGD attack every model of an ensemble at once."""

    def __init__(self, skeleton: nn.Module, params: dict, buffers: dict, models: int):
        super().__init__()
        self.forward_all = vmap(lambda p, b, xb: functional_call(skeleton, (p, b), (xb,)))
        self.state, self.models = (params, buffers), models

    def forward(self, rows: Tensor) -> Tensor:
        out = self.forward_all(*self.state, rows.view(self.models, -1, *rows.shape[1:]))
        return out.reshape(-1, out.shape[-1])


def masked_inputs(x: Tensor, keep: Tensor | None, fill, model_axis: Tensor, index: Tensor) -> Tensor:
    """Batch [M, b, ...] of model m's view of examples ``index[m]``: kept pixels, the rest filled."""
    xb = x[index]
    if keep is None:
        return xb
    per_model = isinstance(fill, Tensor) and fill.ndim > 0
    filler = fill[model_axis, index] if per_model else torch.as_tensor(fill, dtype=x.dtype)
    return torch.where(keep[model_axis, index], xb, filler)


def fit_ensemble(model_fn: Callable[[], nn.Module], x: Tensor, y: Tensor, keep: Tensor | None, fill,
                 seeds: list[int], recipe: Recipe | None = None, *, adversary: PGD | None = None,
                 progress: bool = True, **settings) -> list[nn.Module]:
    """Train ``len(seeds)`` models, model m on ``where(keep[m], x, fill)`` (or on x when keep is None).

    model_fn: builds one fresh model (called under ``torch.manual_seed(seed)``).
    x [N, ...], y [N]: the shared training set; keep [M, N, ...] bool: what model m sees.
    fill: the value of removed pixels: a number, or a tensor [M, N, ...] (per-model imputations).
    seeds: one per model; fixes its initialisation and its batch order.
    recipe / settings: the training recipe (see ``Recipe``; default Adam, lr 1e-3, 3 epochs).
    adversary: PGD adversarial training of every model (each attacked on its own batch).
    """
    recipe = Recipe.of(recipe, **settings)
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(model_fn())
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")

    def loss_one(p, b, xb, yb):
        return F.cross_entropy(functional_call(skeleton, (p, b), (xb,)), yb)

    loss_all = vmap(loss_one)
    stacked = _Stacked(skeleton, params, buffers, len(seeds)) if adversary is not None else None
    optimiser = recipe.optimizer_for(params.values())
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    attack_noise = torch.Generator().manual_seed(seeds[0] if seeds else 0)
    model_axis = torch.arange(len(seeds)).view(-1, 1)
    for epoch in range(recipe.epochs):
        recipe.start_epoch(optimiser, epoch)
        orders = [batch_order(len(y), recipe.batch_size, g) for g in generators]
        for step in tqdm(range(len(orders[0])), desc=f"ensemble of {len(seeds)}, epoch {epoch + 1}/{recipe.epochs}",
                         leave=False, mininterval=1.0, disable=None if progress else True):
            index = torch.stack([order[step] for order in orders])          # [M, b]
            xb, yb = masked_inputs(x, keep, fill, model_axis, index), y[index]
            if adversary is not None:
                attack = recipe.adversary_at(adversary, epoch, step, len(orders[0]))
                flat = attack.perturb(stacked, xb.flatten(0, 1).detach(), yb.flatten(), attack_noise)
                xb = flat.view_as(xb)
            optimiser.zero_grad(set_to_none=True)
            loss_all(params, buffers, xb, yb).sum().backward()
            optimiser.step()
    for m, model in enumerate(models):
        model.load_state_dict({name: value[m].detach() for name, value in {**params, **buffers}.items()})
        model.eval()
    return models


@torch.no_grad()
def ensemble_accuracy(models: list[nn.Module], x: Tensor, y: Tensor, keep: Tensor | None = None, fill=0.0,
                      batch_size: int = 512) -> Tensor:
    """Accuracy [M] of model m on its own masked test set ``where(keep[m], x, fill)`` (x when keep is None)."""
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    predict = vmap(lambda p, b, xb: functional_call(skeleton, (p, b), (xb,)).argmax(1))
    correct = torch.zeros(len(models))
    model_axis = torch.arange(len(models)).view(-1, 1)
    for start in range(0, len(y), batch_size):
        index = torch.arange(start, min(start + batch_size, len(y))).expand(len(models), -1)
        correct += (predict(params, buffers, masked_inputs(x, keep, fill, model_axis, index)) == y[index]).sum(1)
    return correct / len(y)
