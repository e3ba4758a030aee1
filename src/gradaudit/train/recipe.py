"""A training recipe: optimizer, learning rate, schedule, epochs and batch size, in one value.

The same ``Recipe`` drives single-model training (``fit``) and the vectorised ensemble
(``fit_ensemble``). SGD (with momentum and weight decay), Adam and AdamW all update each
element of a parameter from that element's own gradient and state, so a stack of models
trained under one optimizer equals each model trained alone with the same recipe and seed.
The learning rate is set per epoch from ``lr_at(epoch)`` (no torch scheduler objects), which
keeps both paths identical.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch

from ..engine.checks import check_choice, check_nonnegative, check_positive_int

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = (None, "step", "cosine")


@dataclass(frozen=True)
class Recipe:
    """How to train.

    optimizer: "adam" (default), "sgd" or "adamw". lr: initial learning rate.
    momentum: SGD momentum (ignored by Adam/AdamW). weight_decay: L2 (SGD, Adam) or decoupled (AdamW).
    schedule: None (constant), "step" (lr x gamma every ``every`` epochs, never below
        ``floor`` x lr) or "cosine" (from lr to 0 over ``epochs``).
    epochs, batch_size: passes over the data and examples per step.
    adversary_warmup: epochs over which an adversary's eps grows linearly from 0 to its value,
        step by step (0: full eps from the first step). Keeps PGD training from collapsing to a
        constant prediction early on, which plain PGD training of the quick preset's CNN did
        for one seed in six.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str | None = None
    gamma: float = 0.1
    every: int = 30
    floor: float = 0.0
    epochs: int = 3
    batch_size: int = 64
    adversary_warmup: float = 0.0

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be None, 'step' or 'cosine'; got {self.schedule!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "floor", "adversary_warmup"):
            check_nonnegative(name, getattr(self, name))
        for name in ("every", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))

    @classmethod
    def of(cls, recipe: Recipe | None = None, **settings) -> Recipe:
        """``recipe`` with ``settings`` replaced; unknown names get a TypeError listing the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"unknown training setting {unknown[0]!r}; a recipe takes {', '.join(sorted(known))}")
        return cls(**{**(asdict(recipe) if recipe is not None else {}), **settings})

    def optimizer_for(self, params) -> torch.optim.Optimizer:
        """The optimizer over ``params`` at the initial learning rate."""
        params = list(params)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (0-based)."""
        if self.schedule == "step":
            return self.lr * max(self.gamma ** (epoch // self.every), self.floor)
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        return self.lr

    def start_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Set the optimizer's learning rate for ``epoch``."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(epoch)

    def adversary_at(self, adversary, epoch: int, step: int, steps: int):
        """``adversary`` with its eps scaled for step ``step`` of ``steps`` in epoch ``epoch`` (warm-up)."""
        if adversary is None or not self.adversary_warmup:
            return adversary
        progress = (epoch + step / steps) / self.adversary_warmup
        return adversary if progress >= 1 else replace(adversary, eps=adversary.eps * progress)

    def describe(self, adversarial: bool = False) -> str:
        """One line for logs and reports (``adversarial``: mention the adversary's warm-up)."""
        parts = [f"{self.optimizer} lr {self.lr:g}"]
        if self.optimizer == "sgd" and self.momentum:
            parts.append(f"momentum {self.momentum:g}")
        if self.weight_decay:
            parts.append(f"weight decay {self.weight_decay:g}")
        if self.schedule == "step":
            floor = f" (floor {self.floor:g})" if self.floor else ""
            parts.append(f"x{self.gamma:g} every {self.every} epochs{floor}")
        elif self.schedule == "cosine":
            parts.append("cosine schedule")
        parts.append(f"{self.epochs} epochs, batch {self.batch_size}")
        if adversarial and self.adversary_warmup:
            parts.append(f"adversary eps ramped over {self.adversary_warmup:g} epochs")
        return ", ".join(parts)
