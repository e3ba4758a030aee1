"""Passes over the training set that estimate the curvature each strategy needs, chunk by chunk.

All are statistics of the Gauss-Newton matrix G of the *mean* training loss, accumulated in
float64 and divided by their counts, as kronfluence does:
- ``covariances``: per layer A = mean over rows of a a^T (inputs) and S = mean over rows of
  g g^T (pseudo-gradients of the outputs of the summed loss), rows = examples x positions (for
  a loss with ``positions(y)``, such as ``sequences.TokenLoss``, only the positions it marks:
  the real tokens of padded sequences);
- ``lambdas``: per layer the mean over examples of the squared per-example pseudo-gradient,
  in the eigenbasis of (A, S) (EK-FAC) or in the weights' own basis (diagonal);
- ``gauss_newton``: G itself over all tracked weights, [D, D].
Memory: the factors, and one chunk's per-example gradients; never all N at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..engine.capture import Capture
from .layers import Layer
from .losses import FisherDraws, curvature, fisher_losses, per_example, projection

Pass = Callable[[Capture, Tensor, Tensor, slice], tuple[list[Tensor], list[Tensor], Tensor | None]]


def positions(loss: Callable | None, y: Tensor) -> Tensor | None:
    """Bool [B, P]: the positions of each example that are rows of the factors (``loss.positions(y)``), or
    None (every position)."""
    found = getattr(loss, "positions", None)
    return found(y) if callable(found) else None


def fisher_pass(loss: Callable | None, fisher: str, draws: FisherDraws) -> Pass:
    """One chunk's layer inputs, output pseudo-gradients for the Fisher of kind ``fisher``, and the mask of
    positions counted as rows (None: all)."""

    def run(cap: Capture, x: Tensor, y: Tensor, rows: slice):
        output = cap.forward(x)
        grads = cap.gradients(fisher_losses(loss, output, y, fisher, draws, rows))
        return cap.inputs, grads, positions(loss, y)

    return run


def _kept(layer: Layer, a: Tensor, g: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """The rows [R, in] and [R, out] of a chunk that the factors count."""
    a, g = layer.rows(a), layer.output_rows(g)
    if mask is None:
        return a.flatten(0, 1), g.flatten(0, 1)
    if tuple(mask.shape) != tuple(a.shape[:2]):
        raise ValueError(f"layer {layer.name!r} has {list(a.shape[:2])} positions per chunk, but the loss marks "
                         f"{list(mask.shape)}: positions(y) must give one flag per example and position of the layer")
    mask = mask.to(a.device, torch.bool)
    return a[mask], g[mask]


def label_gradients(cap: Capture, layers: list[Layer], x: Tensor, y: Tensor, loss: Callable) -> list[Tensor]:
    """Per-example gradients of the loss at the labels, one [B, out, in] per layer."""
    output = cap.forward(x)
    grads = cap.gradients(per_example(loss, output, y))
    return [layer.per_example(a, g) for layer, a, g in zip(layers, cap.inputs, grads, strict=True)]


def covariances(cap: Capture, layers: list[Layer], batches, run: Pass) -> dict[str, dict[str, Tensor]]:
    """{layer: {"A": [in, in], "S": [out, out]}}: the K-FAC factors (row means of a a^T and g g^T)."""
    sums = {layer.name: {"A": 0.0, "S": 0.0, "rows": 0} for layer in layers}
    for rows, x, y in batches:
        inputs, grads, mask = run(cap, x, y, rows)
        for layer, a, g in zip(layers, inputs, grads, strict=True):
            a, g = (t.double() for t in _kept(layer, a, g, mask))
            acc = sums[layer.name]
            acc["A"] = acc["A"] + a.T @ a
            acc["S"] = acc["S"] + g.T @ g
            acc["rows"] += len(a)
    return {name: {"A": acc["A"] / acc["rows"], "S": acc["S"] / acc["rows"]} for name, acc in sums.items()}


def eigenbases(factors: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
    """Eigenvalues and eigenvectors of each layer's A and S (symmetrised, float64)."""
    out = {}
    for name, f in factors.items():
        a_values, a_vectors = torch.linalg.eigh((f["A"] + f["A"].T) / 2)
        s_values, s_vectors = torch.linalg.eigh((f["S"] + f["S"].T) / 2)
        out[name] = {"A_values": a_values, "A_vectors": a_vectors, "S_values": s_values, "S_vectors": s_vectors}
    return out


def lambdas(cap: Capture, layers: list[Layer], batches, run: Pass,
            bases: dict[str, dict[str, Tensor]] | None) -> dict[str, Tensor]:
    """{layer: [out, in]}: the mean squared per-example pseudo-gradient, rotated into the layer's
    eigenbasis Q_S^T grad Q_A when ``bases`` are given (EK-FAC), as it is otherwise (diagonal)."""
    sums = {layer.name: 0.0 for layer in layers}
    count = 0
    for rows, x, y in batches:
        inputs, grads, _ = run(cap, x, y, rows)
        for layer, a, g in zip(layers, inputs, grads, strict=True):
            grad = layer.per_example(a, g).double()
            if bases is not None:
                basis = bases[layer.name]
                grad = basis["S_vectors"].T @ grad @ basis["A_vectors"]
            sums[layer.name] = sums[layer.name] + grad.square().sum(0)
        count += len(x)
    return {name: total / count for name, total in sums.items()}


def gauss_newton(cap: Capture, layers: list[Layer], batches, loss: Callable, fisher: str) -> Tensor:
    """G [D, D] over all tracked weights (layers in order, each [out, in] row-major), exactly:
    mean over examples of J^T H J (``fisher="true"``: the Gauss-Newton matrix, which the true
    Fisher estimates) or of g g^T at the labels (``"empirical"``)."""
    total, count = None, 0
    for _, x, y in batches:
        output = cap.forward(x)
        if fisher == "empirical":
            values = torch.ones(len(x), 1, dtype=torch.float64, device=x.device)
            losses = [per_example(loss, output, y)]
        else:
            values, vectors = curvature(loss, output, y)
            losses = [projection(output, vectors[:, :, k]) for k in range(vectors.shape[2])]
        for k, pseudo in enumerate(losses):
            grads = cap.gradients(pseudo, retain_graph=k + 1 < len(losses))
            flat = torch.cat([layer.per_example(a, g).flatten(1) for layer, a, g
                              in zip(layers, cap.inputs, grads, strict=True)], dim=1).double()
            part = flat.T @ (values[:, k, None].double() * flat)
            total = part if total is None else total + part
        count += len(x)
    return total / count

