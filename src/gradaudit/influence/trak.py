"""TRAK (Park et al. 2023; traker 0.3.2): attribution from randomly projected margin gradients of one or more models.

For each model m, on its tracked weights (every Linear and Conv2d weight, bias as the last column, as the
other strategies see them; D weights in all):
- the output function is the margin f(z) = log(p_y / (1 - p_y)) = z_y - logsumexp_{k != y} z_k (traker's
  ``ImageClassificationModelOutput``), differentiated per example through the engine's ``capture``;
- its features phi(z) = R^T grad f(z) [k]: R [D, k] a seeded Rademacher matrix scaled by 1/sqrt(k) (so
  E[R R^T] = I, and phi(a) . phi(b) estimates grad f(a) . grad f(b)), or no projection (``projection=None``, k = D);
- the kernel K = X^T X + lambda I, X [N, k] the training examples' features (a sum over examples, not a mean);
- the out-to-loss weight Q_i = 1 - p_y(z_i) = sigmoid(-f(z_i)) (minus the derivative of the cross-entropy in f).
score(q, i) = (1/M sum_m phi_m(q)^T K_m^-1 phi_m(z_i)) x (1/M sum_m Q_m,i), the paper's estimator over M models
(traker's ``finalize_scores``): positive when training on z_i raises the query's margin.
``damping=None``: lambda = DAMPING_FRACTION x trace(X^T X) / k, a thousandth of the mean eigenvalue of X^T X:
the paper leaves X^T X unregularised; this keeps its estimate where X^T X is well conditioned and makes the
solve defined where it is singular (softmax's shift invariance makes it so for a linear classifier without
projection). traker differs in two scalings only: it divides the features by sqrt(D) (its ``lambda_reg`` is
our lambda / D) and divides each model's inverse by its mean absolute entry.
Memory: per chunk the per-example gradients [B, D] and their features; X [N, k]; K [k, k] (float64); R drawn
in blocks of BLOCK columns, kept whole through one pass over a dataset when its D x k values fit
PROJECTION_BYTES, else drawn again for every chunk.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..data.inputs import Examples
from ..engine.capture import capture
from ..engine.checks import check_choice
from . import store
from .inputs import check_shape, chunk_size, chunks, device_of, examples
from .layers import Layer, tracked_layers
from .losses import check_labels, logits
from .strategies import EXACT_LIMIT

PROJECTION = 2048                  # traker's default proj_dim
DAMPING_FRACTION = 1e-3
BLOCK = 128                        # columns of R drawn from one seed (traker's BasicProjector: 100)
PROJECTION_BYTES = 2**30          # R kept whole up to this (0.11M weights x 2048 in float32: 0.9 GB)
GRAM_ROWS = 4096                   # rows of X cast to float64 at a time to sum X^T X
RESOLUTION = 1e-12                 # the smallest lambda / trace(X^T X): a condition number of at most 1e12


def check_projection(projection) -> None:
    if projection is not None and (isinstance(projection, bool) or not isinstance(projection, numbers.Integral)
                                   or projection < 1):
        raise ValueError(f"projection must be None (no projection: the features are the whole gradients) or an "
                         f"integer >= 1 (the number of random features), got {projection!r}")


def check_damping(damping) -> None:
    """None, or a number > 0: X^T X is singular wherever the features span fewer than k directions."""
    if damping is None:
        return
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real) or not damping > 0:
        raise ValueError(f"damping must be None ({DAMPING_FRACTION} x the mean eigenvalue of X^T X) or a number > 0 "
                         f"for strategy='trak', got {damping!r}: X^T X is singular when the features span fewer "
                         "directions than there are features (always, for a softmax linear classifier without "
                         "projection: its gradients sum to 0 over the classes), and its inverse is undefined")


def margins(output, y: Tensor) -> Tensor:
    """TRAK's output function per example, log(p_y / (1 - p_y)) = z_y - logsumexp_{k != y} z_k: Tensor[B]."""
    scores = logits(output)
    if y.is_floating_point() or y.ndim != 1:
        raise ValueError(f"strategy='trak' needs class labels [batch] (its output function is the margin of the "
                         f"labelled class); got labels of dtype {y.dtype} and shape {list(y.shape)}")
    check_labels(scores, y)
    if scores.shape[1] < 2:
        raise ValueError("strategy='trak' needs at least 2 classes (the margin compares the labelled class with "
                         f"the others); the model has {scores.shape[1]} output")
    correct = scores.gather(1, y[:, None]).squeeze(1)
    return correct - scores.scatter(1, y[:, None], float("-inf")).logsumexp(1)


class Projection:
    """R [D, k] over the tracked weights (layer after layer, each [out, in] row-major): Rademacher / sqrt(k), drawn
    BLOCK columns at a time from (seed, model, layer, block), so it depends on neither chunking nor device; ``k``
    None is no projection. ``function()`` applies it to per-layer gradients [B, out, in], giving features [B, k]."""

    def __init__(self, sizes: list[int], k: int | None, seed: int, model: int):
        self.sizes, self.k, self.key = sizes, k, (seed, model)

    @property
    def width(self) -> int:
        return sum(self.sizes) if self.k is None else self.k

    def _signs(self, layer: int, block: int) -> Tensor:
        """The signs (int8, +-1) of layer ``layer``'s rows of block ``block``: [size, <= BLOCK]."""
        state = np.random.SeedSequence([*self.key, layer, block]).generate_state(2, dtype=np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        columns = min(BLOCK, self.k - block * BLOCK)
        # 8 random bytes per int64 draw, each byte's sign bit a sign (>> 7 gives -1 or 0, | 1 then -1 or 1):
        # several times faster than bernoulli_ on CPU
        words = torch.randint(-2**63, 2**63 - 1, (self.sizes[layer], -(-columns // 8)), dtype=torch.int64,
                              generator=generator)
        return (words.view(torch.int8)[:, :columns] >> 7) | 1

    def _fill(self, out: Tensor, blocks: range) -> Tensor:
        """``out`` [D, columns of ``blocks``] filled with those blocks of R, scaled by 1/sqrt(k)."""
        rows = np.cumsum([0, *self.sizes])
        for i, b in enumerate(blocks):
            for layer in range(len(self.sizes)):
                signs = self._signs(layer, b)
                out[rows[layer]:rows[layer + 1], i * BLOCK:i * BLOCK + signs.shape[1]].copy_(signs)
        return out.mul_(1 / math.sqrt(self.k))

    def columns(self, block: int, dtype: torch.dtype, device=None) -> Tensor:
        """Block ``block`` of R: its rows for every weight, its columns block x BLOCK onwards, [D, <= BLOCK]."""
        width = min(BLOCK, self.k - block * BLOCK)
        return self._fill(torch.empty(sum(self.sizes), width, dtype=dtype), range(block, block + 1)).to(device)

    def matrix(self, dtype: torch.dtype, device=None) -> Tensor:
        """R [D, k] whole."""
        return self._fill(torch.empty(sum(self.sizes), self.k, dtype=dtype),
                          range(math.ceil(self.k / BLOCK))).to(device)

    def function(self) -> Callable[[list[Tensor]], Tensor]:
        """Per-layer gradients [B, out, in] -> features [B, k]. R is drawn on the first call and kept while the
        function lives when its D x k values fit PROJECTION_BYTES, else drawn block by block on every call."""
        kept: dict = {}

        def project(grads: list[Tensor]) -> Tensor:
            flat = torch.cat([g.flatten(1) for g in grads], dim=1)
            if self.k is None:
                return flat
            if sum(self.sizes) * self.k * flat.element_size() <= PROJECTION_BYTES:
                if "R" not in kept:
                    kept["R"] = self.matrix(flat.dtype, flat.device)
                return flat @ kept["R"]
            out = flat.new_empty(len(flat), self.k)
            for b in range(math.ceil(self.k / BLOCK)):
                block = self.columns(b, flat.dtype, flat.device)
                out[:, b * BLOCK:b * BLOCK + block.shape[1]] = flat @ block
            return out

        return project


@dataclass
class Member:
    """One model's part of TRAK: its projection, the kernel X^T X [k, k] (float64) and its lambda; ``features``
    X [N, k] and ``out_to_loss`` Q [N] of the training set it was fitted on (None once loaded from disk)."""

    model: nn.Module
    layers: list[Layer]
    projection: Projection
    gram: Tensor
    damping: float
    features: Tensor | None = None
    out_to_loss: Tensor | None = None
    _cholesky: Tensor | None = field(default=None, repr=False)

    def featurize(self, found: Examples, batch_size: int | None) -> tuple[Tensor, Tensor]:
        """(phi [N, k], Q [N]) of ``found``, chunk by chunk: never more than one chunk's gradients at once."""
        device = device_of(self.model)
        per_example = (2 * sum(layer.size for layer in self.layers) + self.projection.width) * 8
        size = chunk_size(self.model, found.x[:2].to(device), batch_size, per_example)
        phi, q, project = [], [], self.projection.function()
        with capture(self.model, [(layer.name, layer.module) for layer in self.layers]) as cap:
            for _, x, y in chunks(found, size, device):
                output = cap.forward(x)
                f = margins(output, y)
                grads = cap.gradients(f)
                phi.append(project([layer.per_example(a, g) for layer, a, g
                                            in zip(self.layers, cap.inputs, grads, strict=True)]))
                q.append(torch.sigmoid(-f.detach()))
        return torch.cat(phi), torch.cat(q)

    def solve(self, phi: Tensor) -> Tensor:
        """K^-1 phi for rows phi [R, k]: [R, k] float64. A ValueError when K is not positive definite in float64."""
        if self._cholesky is None:
            kernel = self.gram + self.damping * torch.eye(len(self.gram), dtype=self.gram.dtype,
                                                          device=self.gram.device)
            factor, info = torch.linalg.cholesky_ex(kernel)
            if int(info):
                raise ValueError(f"the TRAK kernel X^T X + damping ({self.damping:.3g}) is not positive definite in "
                                 f"float64: the damping is too small against X^T X's largest eigenvalue "
                                 f"({float(torch.linalg.eigvalsh(self.gram)[-1]):.3g}); pass a larger damping, "
                                 "or None")
            self._cholesky = factor
        return torch.cholesky_solve(phi.double().T.to(self._cholesky.device), self._cholesky).T


def fit_members(models: list[nn.Module], found: Examples, layers, projection: int | None, damping: float | None,
                seed: int, batch_size: int | None) -> list[Member]:
    """Each model's ``Member`` on the training set ``found``: its features, Q, X^T X and lambda."""
    members = []
    for index, model in enumerate(models):
        tracked = tracked_layers(model, layers)
        size = sum(layer.size for layer in tracked)
        if projection is None and size > EXACT_LIMIT:
            raise ValueError(f"projection=None makes the TRAK kernel {size} x {size} (the {size} tracked weights), "
                             f"more than the {EXACT_LIMIT} weights it allows; pass projection=k (e.g. {PROJECTION})")
        member = Member(model, tracked, Projection([layer.size for layer in tracked], projection, seed, index),
                        torch.zeros(0), 0.0)
        member.features, member.out_to_loss = member.featurize(found, batch_size)
        member.gram = sum(part.T @ part for part in (rows.double() for rows in member.features.split(GRAM_ROWS)))
        member.damping = float(damping) if damping is not None else \
            DAMPING_FRACTION * float(member.gram.trace()) / len(member.gram)
        if not member.damping > 0:
            raise ValueError(f"model {index}'s margin gradients are zero on every training example (X^T X = 0), so "
                             "damping=None gives no damping and TRAK's kernel has no inverse; pass damping > 0")
        if member.damping < RESOLUTION * float(member.gram.trace()):
            raise ValueError(f"damping {member.damping:.3g} is below float64's resolution of model {index}'s X^T X "
                             f"(trace {float(member.gram.trace()):.3g}): where X^T X is singular the solve would be "
                             f"noise; pass damping >= {RESOLUTION} x its trace, or None")
        members.append(member)
    return members


class Trak:
    """What ``influence.fit(..., strategy="trak")`` returns, for one model or an ensemble: ``scores(queries,
    train)`` [Q, N], ``self_scores(train)`` [N], ``save(folder)``; ``damping`` holds each model's lambda."""

    strategy = "trak"

    def __init__(self, members: list[Member], settings: dict, train: Examples | None):
        self.members, self.settings, self._train = members, settings, train

    @property
    def layers(self) -> list[Layer]:
        return self.members[0].layers

    @property
    def damping(self) -> dict[str, float]:
        """{"model m": lambda added to that model's X^T X}."""
        return {f"model {m}": member.damping for m, member in enumerate(self.members)}

    def _examples(self, data, name: str) -> Examples:
        found = examples(data, name)
        check_shape(found, self.settings["input_shape"], name)
        return found

    def _train_parts(self, found: Examples) -> list[tuple[Tensor, Tensor]]:
        """Each model's (X [N, k], Q [N]) of ``found``: kept from ``fit`` when it is the training set, else computed."""
        fitted = self._train
        if fitted is not None and fitted.x.shape == found.x.shape and torch.equal(fitted.x, found.x) \
                and torch.equal(fitted.y, found.y):
            return [(m.features, m.out_to_loss) for m in self.members]
        return [m.featurize(found, self.settings["batch_size"]) for m in self.members]

    def scores(self, queries, train, by: str | None = None) -> Tensor:
        """TRAK scores Tensor[Q, N]: positive when training on the example raises the query's margin.

        queries, train: any dataset ``train.fit`` accepts, of (x, y) examples with class labels.
        by: only None: the projection mixes every layer's weights into each feature, so a TRAK score does not
            split into per-layer terms.
        """
        self._check_by(by)
        found_q, found_t = self._examples(queries, "queries"), self._examples(train, "train")
        kernel, weight = 0.0, 0.0
        for member, (x, q) in zip(self.members, self._train_parts(found_t), strict=True):
            phi, _ = member.featurize(found_q, self.settings["batch_size"])
            kernel = kernel + member.solve(phi) @ x.double().T.to(member.gram.device)
            weight = weight + q.double().to(member.gram.device)
        m = len(self.members)
        return ((kernel / m) * (weight / m)[None, :]).to(x.dtype)

    def self_scores(self, train) -> Tensor:
        """Each training example's TRAK score on its own margin, Tensor[N] (the diagonal of scores(train, train))."""
        found = self._examples(train, "train")
        kernel, weight = 0.0, 0.0
        for member, (x, q) in zip(self.members, self._train_parts(found), strict=True):
            kernel = kernel + (member.solve(x) * x.double().to(member.gram.device)).sum(1)
            weight = weight + q.double().to(member.gram.device)
        m = len(self.members)
        return ((kernel / m) * (weight / m)).to(x.dtype)

    def token_scores(self, *args, **kwargs):
        raise ValueError("token_scores does not apply to strategy='trak': its output function is a classifier's "
                         "margin, one per example, and the projection mixes the positions' gradient terms")

    @staticmethod
    def _check_by(by) -> None:
        check_choice("by", by, (None, "layer"))
        if by == "layer":
            raise ValueError("by='layer' does not apply to strategy='trak': the random projection mixes every "
                             "layer's weights into each feature, so a TRAK score does not split into per-layer "
                             "terms; use by=None")

    def save(self, folder):
        """Write each model's X^T X and lambda, and the settings, into ``folder``; ``influence.load(folder, models)``
        reads them (the training features are computed again on the first ``scores``)."""
        settings = {**self.settings, "strategy": self.strategy, "layers": [layer.name for layer in self.layers],
                    "shapes": [list(layer.shape) for layer in self.layers], "models": len(self.members),
                    "damping_per_model": [member.damping for member in self.members]}
        return store.write(folder, settings, {f"model {m}": {"gram": member.gram}
                                              for m, member in enumerate(self.members)})


def load(settings: dict, factors: dict, models: list[nn.Module], folder) -> Trak:
    """The ``Trak`` a ``Trak.save`` wrote (``settings``, ``factors``), on ``models`` (as many as were saved)."""
    if len(models) != settings["models"]:
        raise ValueError(f"the TRAK in {str(folder)!r} was fitted on {settings['models']} model(s); got {len(models)}")
    members = []
    for index, (model, damping) in enumerate(zip(models, settings["damping_per_model"], strict=True)):
        tracked = tracked_layers(model, settings["layers"])
        projection = Projection([layer.size for layer in tracked], settings["projection"], settings["seed"], index)
        gram = factors[f"model {index}"]["gram"].to(device_of(model))
        members.append(Member(model, tracked, projection, gram, float(damping)))
    kept = {key: settings[key] for key in ("projection", "seed", "damping", "batch_size", "input_shape")}
    return Trak(members, kept, None)
