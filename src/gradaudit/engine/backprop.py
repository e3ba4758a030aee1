"""One forward + backward pass: scores, input gradient and layer (activation, gradient) pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .forward import run_model
from .probe import Probe
from .rules import modified
from .target import Target, class_logits


@dataclass
class Pass:
    """What one pass observed. Shapes: scores [R]; input_grad like the input; one
    activation and one gradient per observed layer, each shaped like that layer's output."""

    scores: Tensor
    input_grad: Tensor | None
    activations: list[Tensor]
    gradients: list[Tensor]


def backprop(model: nn.Module, x: Tensor, target: Target, rows: Tensor, *, layers=(),
             wrt_input: bool = True, rule: str | None = None) -> Pass:
    """Run ``model`` on ``x`` [R, ...] and differentiate the summed per-row scores.

    ``rows`` [R] gives the example of each row (for the target); ``layers`` is a list of
    ``(name, module)`` to observe; ``rule`` a modified backward rule or None (a ValueError, naming
    what the rule needed, when the forward gave it nothing to apply to). Rows are
    independent in eval mode, so the gradient of the sum is each row's own gradient. With
    ``rule="rescale"`` (DeepLIFT), ``x`` is [inputs; references] and only the inputs' half of
    the scores is differentiated.
    """
    leaf = x.detach().requires_grad_(wrt_input)
    with Probe(layers) as probe, modified(rule, model) as mode, torch.enable_grad():
        # The clone lets a model modify its input in place without touching the leaf.
        output = run_model(model, leaf.clone() if wrt_input else leaf, rows)
        missing = None if mode is None else mode.missing()
        if missing:
            raise ValueError(f"{type(getattr(model, 'explained_model', model)).__name__}: {missing}")
        scores = target.scores(output, rows)
        activations = probe.activations()
        wrt = ([leaf] if wrt_input else []) + activations
        differentiated = scores[: len(scores) // 2] if rule == "rescale" else scores
        if scores.requires_grad:
            grads = torch.autograd.grad(differentiated.sum(), wrt, allow_unused=True)
        else:
            grads = [None] * len(wrt)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads, strict=False)]
    input_grad = grads.pop(0) if wrt_input else None
    return Pass(scores.detach(), input_grad, [a.detach() for a in activations], grads)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, target: Target, chunk: int) -> Tensor:
    """Scores [B] of ``target`` on ``x`` without gradients, ``chunk`` rows at a time."""
    out = []
    for start in range(0, len(x), chunk):
        rows = torch.arange(start, min(start + chunk, len(x)), device=x.device)
        out.append(target.scores(run_model(model, x[start:start + chunk], rows), rows))
    return torch.cat(out)


def predicted_classes(model: nn.Module, x: Tensor, chunk: int) -> Tensor:
    """LongTensor[B]: the class the model predicts for each example."""
    rows = torch.arange(len(x), device=x.device)
    with torch.no_grad():
        return torch.cat([class_logits(run_model(model, x[s:s + chunk], rows[s:s + chunk])).argmax(1)
                          for s in range(0, len(x), chunk)])


@torch.no_grad()
def observe(model: nn.Module, x: Tensor, rows: Tensor, layers) -> list[Tensor]:
    """Outputs of ``layers`` (list of ``(name, module)``) on one gradient-free forward of ``x`` [R, ...]."""
    with Probe(layers) as probe:
        run_model(model, x, rows)
        return [a.detach() for a in probe.activations()]


@dataclass(frozen=True)
class LayerOutput:
    """What a submodule produced on a one-example forward: its dotted ``name``, the ``module``,
    the per-example ``shape`` of its output tensor (the first, for tuple outputs; None when it is
    no tensor or its first axis is not the batch) and how many ``calls`` it had."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None
    calls: int


@torch.no_grad()
def survey(model: nn.Module, x: Tensor) -> list[LayerOutput]:
    """Every submodule the forward of ``x[:1]`` called, in the order of their last call's end
    (a container comes after its children). Names are those of the user's model inside a wrapper
    that sets ``explained_model``, as ``resolve_layer`` gives them. Hooks are removed on exit."""
    found: dict[str, LayerOutput] = {}
    named = [(name, module) for name, module in getattr(model, "explained_model", model).named_modules() if name]

    def record(name, module):
        def hook(_module, _inputs, output):
            tensor = output[0] if isinstance(output, tuple) and output else output
            batched = isinstance(tensor, Tensor) and tensor.ndim >= 1 and tensor.shape[0] == 1
            calls = found.pop(name).calls + 1 if name in found else 1
            found[name] = LayerOutput(name, module, tuple(tensor.shape[1:]) if batched else None, calls)

        return hook

    handles = []
    try:
        for name, module in named:
            handles.append(module.register_forward_hook(record(name, module)))
        run_model(model, x[:1], torch.zeros(1, dtype=torch.long, device=x.device))
    finally:
        for handle in handles:
            handle.remove()
    return list(found.values())
