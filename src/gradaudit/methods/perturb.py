"""Perturbation methods as local function approximation (Han, Srinivas, Lakkaraju 2022).

Each method draws a neighbourhood of perturbed inputs x' around x, evaluates the model on them
without gradients (``engine.sample_scores``: inference mode, memory-bounded chunks), then fits
or aggregates. The draws depend only on (seed, sample), never on ``batch_size``; all examples
share the same perturbation pattern, so one linear solve serves the whole batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..engine import sample_scores
from ..engine.checks import check_nonnegative, check_positive_int
from ..engine.noise import GaussianNoise, uniform
from ..engine.packing import current_layout
from .base import Method, fix_target


def _blocks(sizes: tuple[int, ...], block: tuple[int, ...]) -> Tensor:
    """Row-major ids [*sizes] of the regular blocks (``block`` elements along each axis, cropped at the edge)."""
    ids = torch.zeros((), dtype=torch.long)
    for size, step in zip(sizes, block, strict=True):
        ids = ids.unsqueeze(-1) * -(-size // step) + torch.arange(size) // step
    return ids


def feature_ids(groups, shape) -> tuple[Tensor, int]:
    """Feature index of every element of one example ([*shape] LongTensor) and the count d.

    shape: one example's shape; with groups, [C, *spatial] with 1 to 3 spatial axes (signals [C, L],
    images [C, H, W], volumes and video [C, D, H, W]).
    groups: None (each element its own feature), an int p (blocks of p along every spatial axis: p x p
    patches of an image, p x p x p cubes of a volume), a tuple of one block size per spatial axis, or an
    int tensor [*spatial] of ids 0..d-1 (superpixels); every group is shared by all channels.
    """
    if groups is None:
        count = int(torch.tensor(shape).prod())
        return torch.arange(count).view(shape), count
    if not 2 <= len(shape) <= 4:
        raise ValueError("feature_groups needs inputs [B, C, L], [B, C, H, W] or [B, C, D, H, W]; got per-example "
                         f"shape {list(shape)}")
    spatial = tuple(shape[1:])
    sizes = ", ".join(map(str, spatial))
    if isinstance(groups, int) and not isinstance(groups, bool):
        check_positive_int("feature_groups", groups)
        ids = _blocks(spatial, (groups,) * len(spatial))
    elif isinstance(groups, tuple) and len(groups) == len(spatial) and all(
            isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in groups):
        ids = _blocks(spatial, groups)
    elif isinstance(groups, Tensor) and tuple(groups.shape) == spatial and not groups.is_floating_point():
        ids = groups.long()
        if int(ids.min()) != 0 or ids.unique().numel() != int(ids.max()) + 1:
            raise ValueError("feature_groups ids must be 0..d-1 with every id used")
    else:
        raise ValueError(f"feature_groups must be None, a patch size, a tuple of {len(spatial)} block sizes (one per "
                         f"spatial axis) or an int tensor of shape [{sizes}]; got {groups!r}")
    _, ids = ids.unique(return_inverse=True)
    return ids.expand(shape), int(ids.max()) + 1


def ridge(design: Tensor, targets: Tensor, weights: Tensor, penalty: float) -> Tensor:
    """Weighted ridge regression with an unpenalised intercept (last column of the result).

    design [n, d], targets [B, n], weights [n] -> coefficients [B, d + 1] (intercept last).
    Solves in the dual (n x n) when n < d, so many features stay cheap. Without a penalty the weighted
    design must determine every coefficient (rank d), else a ValueError says to raise samples.
    """
    n, d = design.shape
    root = weights.sqrt()[:, None]
    mean_x = (weights[:, None] * design).sum(0) / weights.sum()
    mean_y = (targets * weights).sum(1, keepdim=True) / weights.sum()
    xc = (design - mean_x) * root                                        # [n, d]
    yc = ((targets - mean_y) * root.T).T                                 # [n, B]
    if penalty == 0 and (n <= d or int(torch.linalg.matrix_rank(xc)) < d):  # centred: rank <= n - 1
        raise ValueError(f"the least-squares fit of {n} samples on {d} features is singular (the samples do not "
                         "determine every feature's coefficient); raise samples, group features with "
                         "feature_groups=, or set penalty > 0")
    eye = torch.eye(min(n, d), dtype=design.dtype, device=design.device)
    if n >= d:
        beta = torch.linalg.solve(xc.T @ xc + penalty * eye, xc.T @ yc)   # [d, B]
    else:
        beta = xc.T @ torch.linalg.solve(xc @ xc.T + penalty * eye, yc)
    intercept = mean_y.squeeze(1) - mean_x @ beta
    return torch.cat([beta.T, intercept[:, None]], dim=1)


@dataclass(frozen=True)
class PerturbationMethod(Method):
    """Draw ``samples`` masks or offsets, score the model on them, fit or aggregate."""

    linear_model: ClassVar[str] = "contribution"
    seed: int = 0

    def _evaluate(self, model, x, target, chunk, n, perturb):
        return sample_scores(model, target, len(x), n, chunk, perturb, x.device)


def _per_axis(name: str, value, rank: int) -> tuple[int, ...]:
    """``value`` (an int, or a tuple of ``rank`` ints) as one int per spatial axis."""
    values = (value,) * rank if isinstance(value, int) and not isinstance(value, bool) else value
    if not (isinstance(values, (tuple, list)) and len(values) == rank
            and all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        raise ValueError(f"{name} must be an int or a tuple of {rank} ints, one per spatial axis of the inputs; "
                         f"got {value!r}")
    return tuple(values)


@dataclass(frozen=True)
class Occlusion(PerturbationMethod):
    """f(x) - f(x with a window set to ``fill``), averaged over the windows covering each element.

    window, stride: ints or tuples of one int per spatial axis of the inputs ((L,) for signals [B, C, L],
    (h, w) for images, (d, h, w) for volumes and video [B, C, D, H, W]), all channels at once; windows
    start at multiples of the stride and the last one is cropped at the edge (Captum's convention).
    """

    window: int | tuple = 4
    stride: int | tuple = 2
    fill: float = 0.0

    def _windows(self, sizes: tuple[int, ...]) -> Tensor:
        """Bool [n_windows, *sizes] of the occluded elements of each window."""
        window, stride = (_per_axis(name, v, len(sizes)) for name, v in (("window", self.window),
                                                                          ("stride", self.stride)))
        if any(w > n or s > w or s < 1 for n, w, s in zip(sizes, window, stride, strict=True)):
            raise ValueError(f"window {self.window} / stride {self.stride} do not fit a {'x'.join(map(str, sizes))} "
                             "input (need 1 <= stride <= window <= size)")
        starts = [[i * s for i in range(-(-(n - w) // s) + 1)] for n, w, s in zip(sizes, window, stride, strict=True)]
        corners = list(itertools.product(*starts))
        masks = torch.zeros(len(corners), *sizes, dtype=torch.bool)
        for i, corner in enumerate(corners):
            masks[(i, *(slice(c, c + w) for c, w in zip(corner, window, strict=True)))] = True
        return masks

    def _explain(self, model, x, target, chunk):
        if current_layout() is not None:
            raise ValueError("Occlusion slides windows over one input [B, C, *spatial]; for tuple inputs use "
                             "LIME, KernelSHAP or CLIME, which perturb every input feature")
        if not 3 <= x.ndim <= 5:
            raise ValueError(f"Occlusion needs inputs [B, C, L], [B, C, H, W] or [B, C, D, H, W]; got {list(x.shape)}")
        target = fix_target(model, x, target, chunk)
        masks = self._windows(tuple(x.shape[2:])).to(x.device)
        flat = masks.flatten(1).to(x.dtype)

        def occlude(e, k):
            return torch.where(masks[k].unsqueeze(1), torch.as_tensor(self.fill, dtype=x.dtype), x[e])

        clean = self._evaluate(model, x, target, chunk, 1, lambda e, k: x[e])
        drops = clean - self._evaluate(model, x, target, chunk, len(masks), occlude)   # [B, n]
        per_element = (drops.to(x.dtype) @ flat) / flat.sum(0)
        return per_element.view(len(x), 1, *x.shape[2:]).expand_as(x).contiguous()


def _binary_perturb(x: Tensor, ids: Tensor, masks: Tensor, baseline: float):
    """Perturbation x' = x where the feature is kept, else the baseline (x * z for baseline 0)."""
    def perturb(e, k):
        keep = masks[k][:, ids]                                           # [R, *shape]
        return torch.where(keep, x[e], torch.as_tensor(baseline, dtype=x.dtype))

    return perturb


def _spread(coefficients: Tensor, ids: Tensor, x: Tensor) -> Tensor:
    """Per-feature coefficients [B, d] onto every element of their feature: input-shaped."""
    return coefficients[:, ids].to(x.dtype)


@dataclass(frozen=True)
class LIME(PerturbationMethod):
    """LIME (Ribeiro et al. 2016): binary masks z ~ Bernoulli(1/2) over features (x' = x * z, or
    the ``baseline`` where z = 0), weighted by exp(-D(z)^2 / kernel_width^2) with D the fraction-
    normalised L2 distance ||1 - z|| / sqrt(d); weighted ridge fit; coefficients per feature.

    feature_groups: None (every element a feature), a block size p (p, p x p or p x p x p blocks of
    a signal, image or volume, shared by the channels), a tuple of one block size per spatial axis, or
    an int tensor [*spatial] of group ids 0..d-1 (see ``feature_ids``).
    penalty: ridge penalty; with 0 (KernelSHAP's default) ``samples`` must exceed the number of features.
    """

    samples: int = 1000
    kernel_width: float = 1.0
    feature_groups: object = None
    baseline: float = 0.0
    penalty: float = 1.0

    def __post_init__(self):
        check_positive_int("samples", self.samples, 2)
        check_nonnegative("kernel_width", self.kernel_width)

    @property
    def evaluations(self) -> int:
        return self.samples

    def _masks(self, d: int, device) -> Tensor:
        return uniform(self.seed, 3, torch.arange(self.samples, device=device), (d,)) < 0.5

    def _weights(self, masks: Tensor) -> Tensor:
        distance = (1 - masks.double()).sum(1).sqrt() / masks.shape[1] ** 0.5
        return torch.exp(-distance**2 / max(self.kernel_width, 1e-12) ** 2)

    def _explain(self, model, x, target, chunk):
        target = fix_target(model, x, target, chunk)
        ids, d = feature_ids(self.feature_groups, x.shape[1:])
        if self.penalty == 0 and self.samples <= d:
            raise ValueError(f"{type(self).__name__}(samples={self.samples}) cannot fit {d} features without a "
                             f"penalty: samples must be > {d} (one coefficient per feature and an intercept); raise "
                             "samples, group features with feature_groups=, or set penalty > 0")
        ids = ids.to(x.device)
        masks = self._masks(d, x.device)
        scores = self._evaluate(model, x, target, chunk, self.samples, _binary_perturb(x, ids, masks, self.baseline))
        fit = ridge(masks.double(), scores.double(), self._weights(masks).to(x.device), self.penalty)
        return _spread(fit[:, :d], ids, x)


@dataclass(frozen=True)
class KernelSHAP(LIME):
    """KernelSHAP (Lundberg & Lee 2017): coalition sizes drawn by the Shapley kernel, subsets
    uniform, plus the empty and full coalitions held (near-)exactly; the fit's coefficients are
    Shapley-value estimates summing to f(x) - f(baseline)."""

    penalty: float = 0.0

    def _masks(self, d: int, device) -> Tensor:
        if d < 2:
            raise ValueError("KernelSHAP needs at least two features")
        sizes = torch.arange(1, d, dtype=torch.float64)
        kernel = (d - 1) / (sizes * (d - sizes))
        cumulative = (kernel / kernel.sum()).cumsum(0)
        rows = torch.arange(self.samples - 2, device=device)
        draw = uniform(self.seed, 4, rows, (1,), torch.float64)[:, 0].cpu()
        size = (torch.searchsorted(cumulative, draw) + 1).clamp(max=d - 1).to(device)
        rank = uniform(self.seed, 5, rows, (d,), torch.float64).argsort(1).argsort(1)
        masks = rank < size[:, None]
        anchors = torch.stack([torch.ones(d, dtype=torch.bool), torch.zeros(d, dtype=torch.bool)]).to(device)
        return torch.cat([masks, anchors])

    def _weights(self, masks: Tensor) -> Tensor:
        weights = torch.ones(len(masks), dtype=torch.float64)
        weights[-2:] = 1e6                         # the full and empty coalitions: near-constraints
        return weights



@dataclass(frozen=True)
class CLIME(PerturbationMethod):
    """Continuous LIME: x' = x + eps, eps ~ N(0, sigma^2) per element, constant weights, ridge fit
    of f(x') on eps. Its coefficients are a gradient-like (per unit input) linear model."""

    linear_model: ClassVar[str] = "gradient"
    samples: int = 1000
    sigma: float = 0.1
    penalty: float = 1e-3

    def __post_init__(self):
        check_positive_int("samples", self.samples, 2)
        check_nonnegative("sigma", self.sigma)

    @property
    def evaluations(self) -> int:
        return self.samples

    def _explain(self, model, x, target, chunk):
        target = fix_target(model, x, target, chunk)
        draws = GaussianNoise(self.seed, 1, x.shape[1:], x.dtype)
        offsets = self.sigma * draws.rows(torch.zeros(self.samples, dtype=torch.long), torch.arange(self.samples))
        offsets = offsets.to(x.device)
        scores = self._evaluate(model, x, target, chunk, self.samples, lambda e, k: x[e] + offsets[k])
        design = offsets.flatten(1).double()
        fit = ridge(design, scores.double(), torch.ones(self.samples, dtype=torch.float64, device=x.device),
                    self.penalty * self.sigma**2)
        return fit[:, :-1].view_as(x).to(x.dtype)
