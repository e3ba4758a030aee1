"""One forward + backward pass: scores, input gradient and layer (activation, gradient) pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .probe import Probe
from .rules import modified
from .target import Target, _logits


@dataclass
class Pass:
    """What one pass observed. Shapes: scores [R]; input_grad like the input; one
    activation and one gradient per observed layer, each shaped like that layer's output."""

    scores: Tensor
    input_grad: Tensor | None
    activations: list[Tensor]
    gradients: list[Tensor]


def _forward(model: nn.Module, x: Tensor):
    try:
        return model(x)
    except RuntimeError as err:
        raise ValueError(f"model(inputs) failed for inputs with per-example shape {list(x.shape[1:])}: {err}") from err


def backprop(model: nn.Module, x: Tensor, target: Target, rows: Tensor, *, layers=(),
             wrt_input: bool = True, rule: str | None = None) -> Pass:
    """Run ``model`` on ``x`` [R, ...] and differentiate the summed per-row scores.

    ``rows`` [R] gives the example of each row (for the target); ``layers`` is a list of
    ``(name, module)`` to observe; ``rule`` a modified backward rule or None. Rows are
    independent in eval mode, so the gradient of the sum is each row's own gradient.
    """
    leaf = x.detach().requires_grad_(wrt_input)
    with Probe(layers) as probe, modified(rule), torch.enable_grad():
        # The clone lets a model modify its input in place without touching the leaf.
        output = _forward(model, leaf.clone() if wrt_input else leaf)
        scores = target.scores(output, rows)
        activations = probe.activations()
        wrt = ([leaf] if wrt_input else []) + activations
        if scores.requires_grad:
            grads = torch.autograd.grad(scores.sum(), wrt, allow_unused=True)
        else:
            grads = [None] * len(wrt)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads)]
    input_grad = grads.pop(0) if wrt_input else None
    return Pass(scores.detach(), input_grad, [a.detach() for a in activations], grads)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, target: Target, chunk: int) -> Tensor:
    """Scores [B] of ``target`` on ``x`` without gradients, ``chunk`` rows at a time."""
    out = []
    for start in range(0, len(x), chunk):
        rows = torch.arange(start, min(start + chunk, len(x)), device=x.device)
        out.append(target.scores(_forward(model, x[start:start + chunk]), rows))
    return torch.cat(out)


def predicted_classes(model: nn.Module, x: Tensor, chunk: int) -> Tensor:
    """LongTensor[B]: the class the model predicts for each example."""
    with torch.no_grad():
        return torch.cat([_logits(_forward(model, x[s:s + chunk])).argmax(1) for s in range(0, len(x), chunk)])
