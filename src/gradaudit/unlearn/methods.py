"""Unlearning methods on one training loop: each returns a new model; the one handed in is left as found.

Defaults are the authors' CIFAR-10 commands (OPTML-Group/Unlearn-Saliency, ``Classification/README.md``
and ``arg_parser.py``): SGD, momentum 0.9, weight decay 5e-4, batch 256; Retrain 160 epochs at lr
0.1, FineTune 10 epochs at 0.01, GradientAscent 5 epochs at 1e-4, SalUn (and RandomLabel, SalUn
without its mask) 10 epochs at 0.1, L1Sparse (their ``FT_prune``) 10 epochs at 0.01. Their lr
decays x0.1 at epochs 91 and 136, which only Retrain's 160 epochs reach; here the decay is at 91.
Presets scale epochs and rates to their small models and say so.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.inputs import Examples, as_examples
from ..train.fit import batch_order
from ..train.recipe import Recipe
from .saliency import WeightMasks, check_threshold, trainable, weight_saliency


@dataclass(frozen=True)
class Batch:
    """One step's inputs ``x``, labels ``y`` and the loss sign (+1 descend, -1 ascend)."""

    x: Tensor
    y: Tensor
    sign: float = 1.0


def _examples(data, name: str) -> Examples:
    examples = as_examples(data, name)
    if len(examples) == 0:
        raise ValueError(f"{name} is empty; it needs at least one (x, y) example")
    return examples


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every submodule's ``reset_parameters()`` called, under ``seed``
    (the global RNG is left alone): a fresh network of the same architecture."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh


@dataclass
class Unlearner:
    """The shared loop: copy the model, then for each epoch take the steps ``batches`` yields,
    minimising sign x cross-entropy (+ ``penalty``), with updates limited to ``masks`` when given.

    epochs, lr, momentum, weight_decay, batch_size: SGD settings (see the module docstring).
    Call: ``method(model, forget, retain, seed=0)`` -> new model in eval mode.
    """

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    decay_at: int = 91

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def recipe(self) -> Recipe:
        return Recipe(optimizer="sgd", lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                      schedule="step", gamma=0.1, every=self.decay_at, epochs=self.epochs, batch_size=self.batch_size)

    def start(self, model: nn.Module, forget: Examples, retain: Examples, seed: int) -> nn.Module:
        """The network the loop trains: a copy of the trained model (Retrain: a fresh one)."""
        return copy.deepcopy(model)

    def update_masks(self, model: nn.Module, forget: Examples, seed: int) -> WeightMasks | None:
        """The weights allowed to change (None: all)."""
        return None

    def batches(self, forget: Examples, retain: Examples, epoch: int, generator: torch.Generator):
        """The steps of one epoch."""
        raise NotImplementedError

    def penalty(self, model: nn.Module, epoch: int) -> Tensor | float:
        return 0.0

    def __call__(self, model: nn.Module, forget, retain, *, seed: int = 0, progress: bool = False) -> nn.Module:
        trainable(model)
        forget, retain = _examples(forget, "forget"), _examples(retain, "retain")
        recipe = self.recipe
        masks = self.update_masks(model, forget, seed)
        new = self.start(model, forget, retain, seed)
        params = trainable(new)
        for p in params.values():
            p.grad = None
        if masks is not None and (set(masks) != set(params) or
                                  any(masks[n].shape != p.shape for n, p in params.items())):
            raise ValueError(f"masks must hold one bool tensor per trainable parameter, of its shape "
                             f"({', '.join(f'{n} {list(p.shape)}' for n, p in params.items())}); got "
                             f"{', '.join(f'{n} {list(m.shape)}' for n, m in masks.items())}")
        frozen = {n: p.detach().clone() for n, p in params.items()} if masks is not None else {}
        optimiser = recipe.optimizer_for(params.values())
        generator = torch.Generator().manual_seed(seed)
        new.train()
        for epoch in tqdm(range(self.epochs), desc=self.name, leave=False, disable=None if progress else True):
            recipe.start_epoch(optimiser, epoch)
            for batch in self.batches(forget, retain, epoch, generator):
                optimiser.zero_grad(set_to_none=True)
                loss = batch.sign * F.cross_entropy(new(batch.x), batch.y) + self.penalty(new, epoch)
                loss.backward()
                if masks is not None:
                    _step_within(masks, params, frozen, optimiser)
                else:
                    optimiser.step()
        return new.eval()


def _step_within(masks: dict, params: dict, frozen: dict, optimiser: torch.optim.Optimizer) -> None:
    """One optimiser step that moves only the masked weights: gradients masked before the step; after
    it, weights outside the mask are put back to their values before unlearning (weight decay would
    move them) and their momentum is zeroed, as the authors' ``_restore_masked_params``."""
    for name, p in params.items():
        if p.grad is not None:
            p.grad.mul_(masks[name])
    optimiser.step()
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.where(masks[name], p, frozen[name]))
            state = optimiser.state.get(p, {})
            if "momentum_buffer" in state and state["momentum_buffer"] is not None:
                state["momentum_buffer"].mul_(masks[name])


def _shuffled(data: Examples, batch_size: int, generator: torch.Generator):
    for index in batch_order(len(data), batch_size, generator):
        yield data.x[index], data.y[index]


def wrong_labels(y: Tensor, classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly drawn label other than ``y`` for each example."""
    return (y + torch.randint(1, classes, y.shape, generator=generator)) % classes


@dataclass
class FineTune(Unlearner):
    """Keep training on the retain set (catastrophic forgetting of the rest)."""

    epochs: int = 10
    lr: float = 0.01

    def batches(self, forget, retain, epoch, generator):
        for x, y in _shuffled(retain, self.batch_size, generator):
            yield Batch(x, y)


@dataclass
class Retrain(FineTune):
    """The gold standard: FineTune's steps on the retain set, from a fresh network of the same
    architecture (``reset_parameters`` under the seed); the forget set is never read."""

    epochs: int = 160
    lr: float = 0.1

    def start(self, model, forget, retain, seed):
        return reinitialised(model, seed)


@dataclass
class GradientAscent(Unlearner):
    """Ascend the cross-entropy of the forget set."""

    epochs: int = 5
    lr: float = 1e-4

    def batches(self, forget, retain, epoch, generator):
        for x, y in _shuffled(forget, self.batch_size, generator):
            yield Batch(x, y, -1.0)


@dataclass
class L1Sparse(FineTune):
    """FineTune plus ``alpha`` x ||weights||_1, alpha decaying linearly to 0 over the epochs (Jia et
    al. 2023; the authors' ``FT_l1``). ``alpha`` 5e-4 is our default: their README leaves it to the user."""

    alpha: float = 5e-4

    def penalty(self, model, epoch):
        weight = self.alpha * (1 - epoch / self.epochs)
        return weight * sum(p.abs().sum() for p in model.parameters() if p.requires_grad)


@dataclass
class RandomLabel(Unlearner):
    """Train on the forget set with random wrong labels, then (``use_retain``, as the authors' ``RL``
    does for CIFAR-10) on the retain set, every epoch. They draw the random label from all classes
    (the true one 1 time in C); here it is always a wrong one."""

    epochs: int = 10
    lr: float = 0.1
    use_retain: bool = True
    classes: int | None = None

    def batches(self, forget, retain, epoch, generator):
        classes = self.classes or int(max(forget.y.max(), retain.y.max())) + 1
        if classes < 2:
            raise ValueError(f"RandomLabel needs at least two classes to draw a wrong label from; the labels hold "
                             f"{classes} (give classes=)")
        for x, y in _shuffled(forget, self.batch_size, generator):
            yield Batch(x, wrong_labels(y, classes, generator))
        if self.use_retain:
            for x, y in _shuffled(retain, self.batch_size, generator):
                yield Batch(x, y)


MASKS = ("salient", "random", "anti-salient")


@dataclass
class SalUn(RandomLabel):
    """RandomLabel with every update limited to the salient weights (Fan et al. 2024).

    masks: precomputed ``weight_saliency`` masks, or None to compute them from the model and the
        forget set at ``threshold`` (0.5, the paper's default).
    mask: which mask to use, "salient" (SalUn), or a control: "random" (the same share placed at
        random, seeded by the call's seed) or "anti-salient" (the complement).
    """

    masks: dict | None = field(default=None, repr=False)
    mask: str = "salient"
    threshold: float = 0.5

    def __post_init__(self):
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(map(repr, MASKS))}; got {self.mask!r}")
        check_threshold(self.threshold)

    @property
    def name(self) -> str:
        return "SalUn" if self.mask == "salient" else f"SalUn[{self.mask} mask]"

    def update_masks(self, model, forget, seed):
        salient = self.masks
        if salient is None:
            salient = weight_saliency(model, forget, self.threshold)
        else:
            salient = WeightMasks({n: torch.as_tensor(m).bool() for n, m in salient.items()},
                                  getattr(salient, "scores", None))
        if self.mask == "random":
            return salient.random_like(seed)
        return salient.complement() if self.mask == "anti-salient" else salient
