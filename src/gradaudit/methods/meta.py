"""Meta-saliency (Rebuffi, Fong, Ji & Vedaldi, CVPR 2020): explain a model nudged toward the class.

For each example: one plain SGD step of the weights on the cross-entropy of the explained
class for that example alone, the wrapped method's map on the stepped model, then the weights
restored exactly. Follows the authors' ``torchray/attribution/meta_saliency.py`` (NormGrad fork
of TorchRay): lr 0.0025 in their class-sensitivity runs (the function's own default is 1e-4),
one image per step, an option to negate the loss. The paper finds it makes maps more
class-sensitive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from ..engine import as_target, prepared
from ..engine.checks import check_batch_size, check_inputs, check_model, check_nonnegative
from ..engine.target import Classes, Predicted
from .base import Method


@dataclass(frozen=True)
class MetaStep(Method):
    """Wrap ``method``: each example's map is taken after one SGD step of size ``lr`` toward its
    target class (``negate=True``: away from it); the model's weights are restored bit for bit.

    Targets must be classes (None, an int or a LongTensor[B]): the step needs a class to train on.
    """

    method: Method = None
    lr: float = 0.0025
    negate: bool = False

    def __post_init__(self):
        if not isinstance(self.method, Method):
            raise TypeError(f"MetaStep needs a gradaudit method to wrap, got {type(self.method).__name__}")
        check_nonnegative("lr", self.lr)

    def __call__(self, model, inputs, target=None, *, batch_size: int | None = None):
        check_model(model)
        x = check_inputs(inputs, self.method.needs_gradients)
        check_batch_size(batch_size)
        resolved = as_target(target, len(x))
        if not isinstance(resolved, (Classes, Predicted)):
            raise TypeError("MetaStep needs class targets (None, an int or a LongTensor[batch]); "
                            f"got {type(target).__name__}")
        with torch.no_grad(), prepared(model):
            logits = model(x)
        rows = torch.arange(len(x), device=x.device)
        resolved = resolved.fixed(lambda: logits.argmax(1))
        resolved.scores(logits, rows)                 # checks every class is one of the model's outputs
        classes = resolved.classes.expand(len(x)) if resolved.classes.ndim == 0 else resolved.classes
        params = dict(model.named_parameters())
        saved = {name: p.detach().clone() for name, p in params.items()}
        sign = -1.0 if self.negate else 1.0
        maps = []
        try:
            for i in range(len(x)):
                xi, ci = x[i:i + 1], classes[i:i + 1].to(x.device)

                def loss(p, xi=xi, ci=ci):
                    return sign * F.cross_entropy(functional_call(model, p, (xi,)), ci)

                with prepared(model):
                    step = grad(loss)(saved)
                with torch.no_grad():
                    for name, p in params.items():
                        p.copy_(saved[name] - self.lr * step[name])
                maps.append(self.method(model, xi, ci, batch_size=batch_size))
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(saved[name])
        return torch.cat(maps)
