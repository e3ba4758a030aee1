"""Per-example losses, their curvature in output space, and the pseudo-losses of the true Fisher.

The Gauss-Newton matrix of the mean loss is G = mean_n J_n^T H_n J_n, with J_n the Jacobian of
example n's output with respect to the weights and H_n the Hessian of its loss with respect to
its output. Writing H_n = sum_k e_k v_k v_k^T, G is a sum of outer products of the weight
gradients of the pseudo-losses ``v_k . output`` (``exact`` computes it so). The true Fisher
estimates it with one pseudo-gradient per example whose covariance is H_n: the gradient of the
cross-entropy at a label drawn from the model's own softmax (the paper; kronfluence), or, for a
user's loss, of ``r . output`` with r = H_n^(1/2) z and z standard normal (E[r r^T] = H_n).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def logits(output) -> Tensor:
    """``output`` if it is [B, classes] logits, else a ValueError pointing at ``loss=``."""
    if not isinstance(output, Tensor) or output.ndim != 2:
        shape = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"model output is {shape}; the default loss is cross-entropy on [batch, classes] logits: "
                         "pass loss=callable(output, y) -> Tensor[batch] for other outputs")
    return output


def check_labels(scores: Tensor, y: Tensor) -> None:
    """A ValueError when class labels ``y`` [B] are not indices of the [B, classes] logits ``scores`` (soft
    labels [B, classes], floating point, are left to the loss)."""
    if y.is_floating_point() or y.ndim != 1:
        return
    classes = scores.shape[1]
    outside = (y < 0) | (y >= classes)
    if bool(outside.any()):
        raise ValueError(f"labels must be class indices in [0, {classes}) for the model's {classes} outputs (the "
                         f"default loss is cross-entropy on them); got label {int(y[outside][0])}. Pass "
                         "loss=callable(output, y) -> Tensor[batch] for other targets")


def cross_entropy(output, y: Tensor) -> Tensor:
    """The default loss: cross-entropy per example of [B, classes] logits against class labels [B]."""
    scores = logits(output)
    check_labels(scores, y)
    return F.cross_entropy(scores, y, reduction="none")


def per_example(loss: Callable, output, y: Tensor) -> Tensor:
    """``loss(output, y)`` checked to be one finite-shaped value per example, Tensor[B]."""
    values = loss(output, y)
    if not isinstance(values, Tensor) or tuple(values.shape) != (len(y),):
        shape = list(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"loss returned {shape}; expected one loss per example, a tensor of shape [{len(y)}] "
                         "(reduction='none')")
    return values


def _flat(output) -> Tensor:
    if not isinstance(output, Tensor):
        raise ValueError(f"model output is {type(output).__name__}; influence needs a tensor output [batch, ...]")
    return output.reshape(len(output), -1)


def curvature(loss: Callable, output: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of each example's output-space loss Hessian: values [B, K], vectors [B, K, K]
    (columns), K the output size per example. One backward pass per output coordinate (K is small)."""
    out = output.detach().requires_grad_(True)
    with torch.enable_grad():
        grad = torch.autograd.grad(per_example(loss, out, y).sum(), out, create_graph=True)[0]
        flat = _flat(grad)
        rows = []
        for k in range(flat.shape[1]):
            second = torch.autograd.grad(flat[:, k].sum(), out, retain_graph=True, allow_unused=True)[0]
            rows.append(torch.zeros_like(flat) if second is None else _flat(second))
    hessian = torch.stack(rows, dim=1).to(torch.float64)
    values, vectors = torch.linalg.eigh((hessian + hessian.transpose(1, 2)) / 2)
    return values.to(output.dtype), vectors.to(output.dtype)


def projection(output: Tensor, vectors: Tensor) -> Tensor:
    """The pseudo-losses ``vectors[b] . output[b]`` [B] whose weight gradients are J^T v."""
    return (_flat(output) * vectors).sum(1)


class FisherDraws:
    """Seeded draws for the true Fisher, fixed per training example so any chunking gives the same ones:
    a uniform number per example (to sample a label by inverse CDF) and a standard normal vector
    (for a user's loss), both drawn for all N examples at once from ``seed``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._uniform: Tensor | None = None
        self._normal: Tensor | None = None
        self._token_uniform: Tensor | None = None

    def labels(self, scores: Tensor, rows: slice) -> Tensor:
        """Labels [B] drawn from softmax(scores) ([B, classes] logits) for the training examples ``rows``."""
        if self._uniform is None:
            self._uniform = torch.rand(self.n, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
        u = self._uniform[rows].to(scores.device)
        cdf = torch.softmax(scores.detach().to(torch.float64), dim=1).cumsum(1)
        return torch.searchsorted(cdf, u[:, None]).squeeze(1).clamp_(max=scores.shape[1] - 1)

    def token_labels(self, scores: Tensor, rows: slice) -> Tensor:
        """Labels [B, T] drawn from softmax(scores) ([B, T, vocabulary] logits) at every position of the
        training sequences ``rows`` (a uniform number per example and position, drawn for all N at once)."""
        if self._token_uniform is None or self._token_uniform.shape[1] != scores.shape[1]:
            self._token_uniform = torch.rand(self.n, scores.shape[1], dtype=torch.float64,
                                             generator=torch.Generator().manual_seed(self.seed))
        u = self._token_uniform[rows].to(scores.device)
        cdf = torch.softmax(scores.detach().to(torch.float64), dim=-1).cumsum(-1)
        return torch.searchsorted(cdf, u[..., None]).squeeze(-1).clamp_(max=scores.shape[-1] - 1)

    def directions(self, values: Tensor, vectors: Tensor, rows: slice) -> Tensor:
        """Vectors r [B, K] with E[r r^T] = H_n (negative curvature dropped), for the examples ``rows``."""
        if self._normal is None:
            self._normal = torch.randn(self.n, values.shape[1], generator=torch.Generator().manual_seed(self.seed),
                                       dtype=torch.float64)
        z = self._normal[rows].to(device=values.device, dtype=values.dtype)
        return torch.einsum("bkj,bj->bk", vectors, values.clamp(min=0).sqrt() * z)


def fisher_losses(loss: Callable | None, output: Tensor, y: Tensor, fisher: str, draws: FisherDraws,
                  rows: slice) -> Tensor:
    """Per-example losses [B] whose weight gradients are the pseudo-gradients G is estimated from:
    the loss at the labels (``fisher="empirical"``) or at draws from the model (``"true"``): a loss with a
    ``fisher_loss(output, y, draws, rows)`` method (``sequences.TokenLoss``) draws its own."""
    if fisher == "empirical":
        return per_example(loss or cross_entropy, output, y)
    if callable(getattr(loss, "fisher_loss", None)):
        return per_example(lambda out, labels: loss.fisher_loss(out, labels, draws, rows), output, y)
    if loss is None:
        check_labels(logits(output), y)               # the labels are not used here, but must be the model's classes
        return cross_entropy(output, draws.labels(logits(output), rows))
    values, vectors = curvature(loss, output, y)
    return projection(output, draws.directions(values, vectors, rows))
