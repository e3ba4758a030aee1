"""Attribution metrics that need no retraining, each computed as one published reference does.

- ``insertion_deletion``: RISE's causal metrics (Petsiuk et al. 2018; ``CausalMetric`` in
  eclique/RISE ``evaluation.py``).
- ``pointing_game``: Zhang et al. (2016) as TorchRay's ``benchmark/pointing_game.py`` scores it.
- ``relevance_mass`` and ``relevance_rank``: Arras et al. (2022, CLEVR-XAI).
- ``infidelity``: Yeh et al. (2019), equal to Captum's ``metrics.infidelity`` given the same perturbations.

``methods`` is one method, a list, a dict name -> method, or a dict name -> precomputed maps
[N, H, W] (a tensor whose first ``len(data)`` rows belong to the data's images, in order;
``infidelity`` also takes attributions of the input's shape).
Maps of another size (a layer method's grid) are resized to the image bilinearly.
Beside each mean, a row holds the per-image values it is taken over, ``<column>_each`` (a list, images in
order: ``insertion_each``, ``hit_rate_each``, ...), for paired comparisons and ``metric_audit``.

Shared passes. Where the perturbed inputs do not depend on the map, one call runs the model over them once and
scores every method from those outputs: ``infidelity`` (``perturbation_drops``), ``faithfulness_correlation``
(``subset_drops``) and ``local_faithfulness`` (one run per neighbourhood). The others cannot share:
``insertion_deletion``, ``monotonicity`` and ROAD move pixels in each map's own order, and ``sensitivity_max``
re-runs each method's explainer on its noisy inputs; the pointing game and relevance mass / rank run no model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.inputs import as_examples
from ..engine import auto_rows, prepared, sample_scores
from ..engine.backprop import predicted_classes
from ..engine.chunks import chunk_rows
from ..engine.target import Classes, Target
from ..maps import heatmap, resize
from ..store import Store
from .common import call_arguments, explain_rows, finite_maps, named_methods, per_method, rank_pixels
from .results import AuditResult
from .stats import mean_interval

DEFAULT_STEPS = 32
BLUR_SIZE, BLUR_SIGMA = 11, 5.0


def explained_maps(value, model: nn.Module, x: Tensor, classes: Tensor, pool: Callable[[Tensor], Tensor],
                   name: str, batch: int = 200) -> Tensor:
    """Maps [N, H, W] (float32, the images' size) for the images ``x`` [N, C, H, W]: ``value`` is a
    method, run for ``classes`` [N] in batches of ``batch`` and pooled over channels by ``pool``
    ([B, C, H, W] or a layer's [B, h, w] -> [B, h, w]), or precomputed maps [>= N, h, w] taken as given.
    A non-finite value is a ValueError naming ``name`` (the method) and the first image holding one."""
    if isinstance(value, Tensor):
        if value.ndim != 3 or len(value) < len(x):
            raise ValueError(f"precomputed maps must have shape [N, H, W] with N >= {len(x)} (one per image); "
                             f"got {list(value.shape)}")
        maps = value[:len(x)].detach().float().to(x.device)
    else:
        maps = explain_rows(value, model, x, classes, pool, name, batch).float()
    return resize(finite_maps(maps, name), x.shape[-2:])


def absolute_map(attribution: Tensor) -> Tensor:
    """|attribution| summed over channels ([B, C, H, W]) or of a layer map ([B, h, w])."""
    return heatmap(attribution).abs()


def _positive(attribution: Tensor) -> Tensor:
    """Positive relevance summed over channels ([B, C, H, W]) or of a layer map ([B, h, w])."""
    positive = attribution.clamp(min=0)
    return positive.sum(1) if positive.ndim == 4 else positive


def rise_blur(x: Tensor) -> Tensor:
    """RISE's insertion substrate: each channel of ``x`` [N, C, H, W] convolved with its 11 x 11
    kernel (scipy's ``gaussian_filter`` of a centred delta, sigma 5: a Gaussian whose tails are
    reflected back inside the window, as RISE's ``gkern``), zero padding at the borders."""
    from scipy.ndimage import gaussian_filter

    delta = torch.zeros(BLUR_SIZE, BLUR_SIZE, dtype=torch.float64)
    delta[BLUR_SIZE // 2, BLUR_SIZE // 2] = 1
    kernel = torch.from_numpy(gaussian_filter(delta.numpy(), BLUR_SIGMA)).to(x.dtype).to(x.device)
    channels = x.shape[1]
    return F.conv2d(x, kernel.expand(channels, 1, BLUR_SIZE, BLUR_SIZE), padding=BLUR_SIZE // 2, groups=channels)


def auc(curves: Tensor) -> Tensor:
    """Trapezoid area under each curve [N, n + 1] of equally spaced scores on [0, 1]: (sum - first / 2 -
    last / 2) / n, RISE's ``auc``. [N]."""
    return (curves.sum(1) - curves[:, 0] / 2 - curves[:, -1] / 2) / (curves.shape[1] - 1)


class _ClassScore(Target):
    """The logit, or softmax probability, of a fixed class per example."""

    def __init__(self, classes: Tensor, probability: bool):
        self.classes, self.probability = classes, probability

    def scores(self, output, rows):
        logit = Classes(self.classes).scores(output, rows)
        return (logit - output.logsumexp(1)).exp() if self.probability else logit


def causal_curves(model: nn.Module, x: Tensor, maps: Tensor, classes: Tensor, start: Tensor, finish: Tensor,
                  step: int, probability: bool = True, seed: int = 0) -> Tensor:
    """Scores [N, n + 1] of ``classes`` [N] (softmax probability or logit) as the pixels of ``x``
    [N, C, H, W] go from ``start`` to ``finish`` (both like ``x``), ``step`` pixels at a time, in
    descending order of ``maps`` [N, H, W] (all channels of a pixel together; ties in a seeded random
    order); n = ceil(H W / step). Score k is taken with the first k * step pixels moved, so the first
    score is of ``start`` and the last of ``finish``. The rows run in memory-bounded chunks without
    gradients; ``model`` is evaluated in eval mode and given back as found."""
    n, pixels = len(x), maps[0].numel()
    steps = math.ceil(pixels / step)
    position = pixels - 1 - rank_pixels(maps, seed)             # 0 = the pixel moved first
    target = _ClassScore(classes, probability)

    def moved(examples: Tensor, samples: Tensor) -> Tensor:
        done = (position[examples] < (samples * step)[:, None]).view(len(examples), 1, *x.shape[2:])
        return torch.where(done, finish[examples], start[examples])

    with prepared(model):
        chunk = auto_rows(model, x[:1], gradients=False)
        return sample_scores(model, target, n, steps + 1, chunk, moved, device=x.device)


def image_data(data, limit: int | None):
    """``data`` as ``Examples`` and its first ``limit`` inputs, which must be images [N, C, H, W]."""
    data = as_examples(data)
    x = data.x[:limit]
    if x.ndim != 4:
        raise ValueError(f"this metric needs images [N, C, H, W]; got inputs of shape {list(x.shape)}")
    return data, x


def explained_classes(model: nn.Module, data, x: Tensor) -> Tensor:
    """The class explained and scored for each image of ``x`` [N, ...]: the data's label where it has one
    label per image, else (multi-hot labels) the class ``model`` predicts on the clean image. LongTensor [N]."""
    if data.y is not None and data.y.ndim == 1:
        return data.y[:len(x)].to(x.device)
    with prepared(model):
        return predicted_classes(model, x, auto_rows(model, x[:1], gradients=False))


def insertion_deletion(methods, model: nn.Module, data, *, step: int | None = None, substrate="blur",
                       probability: bool = True, limit: int | None = None, seed: int = 0, model_name: str = "model",
                       store: Store | None = None) -> AuditResult:
    """RISE's insertion and deletion metrics (Petsiuk et al. 2018) for the first ``limit`` images of
    ``data``, per method.

    The score is the model's softmax probability (``probability=False``: its logit) of the class it
    predicts on the clean image. Pixels are taken in descending order of the method's map (|attribution|
    summed over channels; precomputed maps as given), all channels of a pixel at once, ``step`` pixels
    per step; ``step=None`` takes ceil(H W / 32), so about 32 steps whatever the size (RISE uses 224
    pixels per step at 224 x 224: 224 steps; fewer steps make the area a coarser trapezoid, not a
    different quantity). With n = ceil(H W / step) steps each curve has n + 1 scores, both ends included.
    Deletion moves x towards zero (RISE's zero substrate; here zero in the model's input space, which is
    black for pixels in [0, 1] with the normalisation inside the model, where RISE's zero is mean grey);
    insertion moves from ``substrate`` to x: "blur" (``rise_blur``) or a number (a constant image).
    AUC = (sum - first / 2 - last / 2) / n. Ties fall in a seeded random order (RISE's
    argsort puts them in reverse index order, so a flat map deletes from the bottom-right corner).
    Each map's curves follow its own pixel order, so methods share no forward pass.

    Rows, one per method: ``insertion`` and ``deletion`` (mean AUC with its 95% interval over images;
    higher insertion and lower deletion are better), ``difference`` (insertion - deletion, paired per
    image), and the mean curves ``insertion_curve``, ``deletion_curve`` against ``fractions`` (share of
    pixels moved).
    """
    call = call_arguments(locals())
    data, x = image_data(data, limit)
    pixels = x.shape[2] * x.shape[3]
    step = math.ceil(pixels / DEFAULT_STEPS) if step is None else int(step)
    if step < 1:
        raise ValueError(f"step must be a positive number of pixels; got {step}")
    if substrate == "blur":
        blurred = rise_blur(x)
    elif isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        blurred = torch.full_like(x, float(substrate))
    else:
        raise ValueError(f"substrate must be 'blur' or a number (a constant image); got {substrate!r}")
    with prepared(model):
        classes = predicted_classes(model, x, auto_rows(model, x[:1], gradients=False))
    fractions = [min(k * step, pixels) / pixels for k in range(math.ceil(pixels / step) + 1)]

    def compute(method, name):
        maps = explained_maps(method, model, x, classes, absolute_map, name)
        curves = {mode: causal_curves(model, x, maps, classes, start, finish, step, probability, seed).double()
                  for mode, start, finish in (("insertion", blurred, x), ("deletion", x, torch.zeros_like(x)))}
        areas = {mode: auc(curve) for mode, curve in curves.items()}
        return {**mean_interval(areas["insertion"]).as_row("insertion"),
                **mean_interval(areas["deletion"]).as_row("deletion"),
                "insertion_each": areas["insertion"].tolist(), "deletion_each": areas["deletion"].tolist(),
                **mean_interval(areas["insertion"] - areas["deletion"]).as_row("difference"),
                "insertion_curve": curves["insertion"].mean(0).tolist(),
                "deletion_curve": curves["deletion"].mean(0).tolist(), "fractions": fractions,
                "images": len(x)}

    label = {"model": model_name, "step": step, "substrate": substrate, "probability": probability, "seed": seed}
    return AuditResult("insertion_deletion", per_method(store, "insertion_deletion", methods, call, label, compute))


def _masks(data, x: Tensor, masks, audit: str) -> Tensor:
    """Ground-truth masks bool [N, H, W] for the images ``x``: ``masks`` if given, else the data's
    ``signal_mask`` [N, 1, H, W] (BlockMNIST)."""
    if masks is None:
        if not hasattr(data, "signal_mask"):
            raise ValueError(f"{audit} needs ground-truth masks: pass masks= (bool [N, H, W]) or data with a "
                             ".signal_mask, such as data.blockmnist(...)")
        masks = data.signal_mask[:len(x)]
        masks = masks[:, 0] if masks.ndim == 4 else masks
    if not isinstance(masks, Tensor) or masks.ndim != 3 or len(masks) < len(x) \
            or tuple(masks.shape[1:]) != tuple(x.shape[2:]):
        shape = list(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"{audit} needs masks of shape [N, H, W] = [{len(x)}, {x.shape[2]}, {x.shape[3]}] "
                         f"(one per image, the images' size); got {shape}")
    return masks[:len(x)].bool().to(x.device)


def _labels(data, x: Tensor, audit: str) -> Tensor:
    if data.y is None or data.y.ndim != 1:
        raise ValueError(f"{audit} needs one class label per image (the class whose mask is given)")
    return data.y[:len(x)].to(x.device)


def pointing_hits(maps: Tensor, masks: Tensor, tolerance: float = 15) -> Tensor:
    """Bool [N]: whether each map's point, its first maximum in row-major order, lies strictly within
    ``tolerance`` px (Euclidean) of some pixel of its mask [N, H, W], as TorchRay's ``PointingGame``.
    A constant map (all values equal) points nowhere: a miss."""
    flat = maps.flatten(1)
    point = flat.argmax(1)
    rows, cols = point // maps.shape[2], point % maps.shape[2]
    grid_r = torch.arange(maps.shape[1], device=maps.device)[None, :, None]
    grid_c = torch.arange(maps.shape[2], device=maps.device)[None, None, :]
    near = (grid_r - rows[:, None, None]) ** 2 + (grid_c - cols[:, None, None]) ** 2 < tolerance ** 2
    constant = flat.amax(1) == flat.amin(1)
    return (near & masks).flatten(1).any(1) & ~constant


def pointing_game(methods, model: nn.Module, data, *, masks: Tensor | None = None, tolerance: float = 15,
                  limit: int | None = None, model_name: str = "model", store: Store | None = None) -> AuditResult:
    """The pointing game (Zhang et al. 2016) as TorchRay scores it: each image's map (|attribution|
    summed over channels; precomputed maps as given), explained for its label, points at its first
    maximum at image size; a hit when a pixel of the image's mask lies
    strictly within ``tolerance`` px (Euclidean; TorchRay's 15). ``masks``: bool [N, H, W], default the
    data's ``signal_mask`` (BlockMNIST). Where we differ from Quantus on purpose: a tied maximum counts
    once (the first), so a constant map, e.g. all zeros, is a miss rather than a hit.

    Rows, one per method: ``accuracy`` (TorchRay's: the mean over the classes present of hits / (hits +
    misses)), ``class_accuracy`` (the class as a string -> its accuracy) and ``hit_rate`` (the share of images hit,
    with its 95% interval over images).
    """
    call = call_arguments(locals())
    data, x = image_data(data, limit)
    masks = _masks(data, x, masks, "pointing_game")
    labels = _labels(data, x, "pointing_game")

    def compute(method, name):
        hits = pointing_hits(explained_maps(method, model, x, labels, absolute_map, name), masks, tolerance).double()
        per_class = {str(int(c)): hits[labels == c].mean().item() for c in labels.unique()}
        return {"accuracy": sum(per_class.values()) / len(per_class), "class_accuracy": per_class,
                **mean_interval(hits).as_row("hit_rate"), "hit_rate_each": hits.tolist(), "images": len(x)}

    label = {"model": model_name, "tolerance": tolerance}
    return AuditResult("pointing_game", per_method(store, "pointing_game", methods, call, label, compute))


POOLS = {"positive": _positive, "absolute": absolute_map}


def mass_in_mask(relevance: Tensor, masks: Tensor) -> Tensor:
    """Relevance mass accuracy [N]: relevance [N, H, W] (non-negative) inside the mask over the total
    (0 where the total is 0)."""
    total = relevance.flatten(1).sum(1)
    return torch.where(total > 0, (relevance * masks).flatten(1).sum(1) / total.clamp(min=1e-30),
                       torch.zeros_like(total))


def rank_in_mask(relevance: Tensor, masks: Tensor, seed: int = 0) -> Tensor:
    """Relevance rank accuracy [N]: the share of the K most relevant pixels inside the mask, K = the
    mask's size (ties in a seeded random order; an empty mask scores 0)."""
    position = relevance[0].numel() - 1 - rank_pixels(relevance, seed)
    size = masks.flatten(1).sum(1)
    top = position < size[:, None]
    return (top & masks.flatten(1)).sum(1) / size.clamp(min=1)


def _relevance_audit(audit: str, score, call, methods, model, data, masks, pool, limit, seed, model_name, store):
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}; got {pool!r}")
    data, x = image_data(data, limit)
    masks = _masks(data, x, masks, audit)
    labels = _labels(data, x, audit)

    def compute(method, name):
        relevance = explained_maps(method, model, x, labels, POOLS[pool], name)
        relevance = relevance.clamp(min=0) if pool == "positive" else relevance.abs()
        values = score(relevance, masks, seed).double()
        return {**mean_interval(values).as_row(audit), f"{audit}_each": values.tolist(), "images": len(x)}

    return per_method(store, audit, methods, call, {"model": model_name, "pool": pool, "seed": seed}, compute)


def relevance_mass(methods, model: nn.Module, data, *, masks: Tensor | None = None, pool: str = "positive",
                   limit: int | None = None, seed: int = 0, model_name: str = "model",
                   store: Store | None = None) -> AuditResult:
    """Relevance mass accuracy (Arras et al. 2022): the share of each image's relevance, explained for
    its label, that falls inside its ground-truth mask (``masks`` bool [N, H, W], default the data's
    ``signal_mask``). Channels are pooled to non-negative relevance first: ``pool="positive"`` sums
    the positive relevance (CLEVR-XAI's default), ``"absolute"`` sums |relevance|; precomputed maps are
    clipped at 0 (positive) or taken as |map|. Row per method: ``relevance_mass`` with its 95%
    interval over images (1: all relevance inside; a map blind to the mask scores the mask's area share)."""
    rows = _relevance_audit("relevance_mass", lambda r, m, _: mass_in_mask(r, m), call_arguments(locals()), methods,
                            model, data, masks, pool, limit, seed, model_name, store)
    return AuditResult("relevance_mass", rows)


def relevance_rank(methods, model: nn.Module, data, *, masks: Tensor | None = None, pool: str = "positive",
                   limit: int | None = None, seed: int = 0, model_name: str = "model",
                   store: Store | None = None) -> AuditResult:
    """Relevance rank accuracy (Arras et al. 2022): the share of an image's K most relevant pixels that
    lie inside its mask, K = the mask's size; pooling and masks as ``relevance_mass``. Ties fall in a
    seeded random order (``seed``), so a flat map scores the mask's area share on average, not a
    top-left-corner artefact. Row per method: ``relevance_rank`` with its 95% interval over images."""
    rows = _relevance_audit("relevance_rank", rank_in_mask, call_arguments(locals()), methods, model, data, masks,
                            pool, limit, seed, model_name, store)
    return AuditResult("relevance_rank", rows)


def square_perturbations(x: Tensor, samples: int, seed: int = 0, binary: bool = False, largest: int = 10):
    """The default perturbation of ``infidelity``: for each image of ``x`` [N, C, H, W] and each of
    ``samples`` draws one square, side uniform in 1..min(``largest``, H, W) and placed uniformly inside
    the image, whose pixels (all channels) go to zero (the authors' "Square" mode zeroes squares of 1 to
    10 px). The perturbation I is x inside the square and 0 elsewhere (the change itself, for local
    attributions such as the gradient), or with ``binary=True`` the square's indicator (for global
    attributions, which already multiply by x - x': Captum's and the authors' ``binary_I``). Squares are
    drawn once from ``seed``; the returned ``perturb(x_rows, examples, samples) -> (I, perturbed)`` builds
    the [R, ...] rows of any chunk."""
    height, width = x.shape[2:]
    generator = torch.Generator().manual_seed(seed)
    side = torch.randint(1, min(largest, height, width) + 1, (len(x), samples), generator=generator)
    top = (torch.rand(len(x), samples, generator=generator) * (height - side + 1)).long()
    left = (torch.rand(len(x), samples, generator=generator) * (width - side + 1)).long()
    side, top, left = side.to(x.device), top.to(x.device), left.to(x.device)
    rows = torch.arange(height, device=x.device)[None, :, None]
    cols = torch.arange(width, device=x.device)[None, None, :]

    def perturb(x_rows: Tensor, examples: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
        s, t, left_ = side[examples, draws], top[examples, draws], left[examples, draws]
        inside = ((rows >= t[:, None, None]) & (rows < (t + s)[:, None, None])
                  & (cols >= left_[:, None, None]) & (cols < (left_ + s)[:, None, None]))[:, None]
        zeroed = x_rows * ~inside
        return (inside.expand_as(x_rows).to(x_rows.dtype) if binary else x_rows - zeroed), zeroed

    return perturb


def _perturbed(perturb, rows: Tensor, examples: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
    """(I, x') of ``perturb`` for a chunk's ``rows`` [R, ...]: its pair, or I alone meaning x' = x - I; each
    must have the rows' shape (a ValueError names which does not)."""
    change = perturb(rows, examples, draws)
    change, moved = change if isinstance(change, tuple) else (change, rows - change)
    for name, value in (("I", change), ("the perturbed input", moved)):
        if not isinstance(value, Tensor) or value.shape != rows.shape:
            shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"perturbation must return {name} with the rows' shape {list(rows.shape)}; got {shape}")
    return change, moved


def perturbation_drops(model: nn.Module, x: Tensor, classes: Tensor, perturb, samples: int) -> Tensor:
    """f(x) - f(x') [N, samples] (float64) for the logits of ``classes`` [N], x' the perturbed input of each
    image of ``x`` and draw (``perturb`` as ``infidelity_scores``). The model's part of infidelity: it does not
    depend on the attributions, so one call serves every map scored on the same perturbations. Rows run in
    memory-bounded chunks without gradients; ``model`` is evaluated in eval mode and given back as found."""
    target = Classes(classes)
    with prepared(model):
        chunk = auto_rows(model, x[:1], gradients=False)
        clean = sample_scores(model, target, len(x), 1, chunk, lambda e, _: x[e], device=x.device).double()
        return clean - sample_scores(model, target, len(x), samples, chunk,
                                     lambda e, s: _perturbed(perturb, x[e], e, s)[1], device=x.device).double()


DOT_ELEMENTS = 2 ** 20
"""Input elements per chunk when the perturbations are rebuilt to take a map's dot products (4 MB of float32)."""


def perturbation_dots(x: Tensor, attributions: Tensor, perturb, samples: int) -> Tensor:
    """sum_i a_i I_i [N, samples] (float64) of ``attributions`` (like ``x`` [N, ...]) with each draw's I: the
    map's part of infidelity, without the model. The perturbations are rebuilt in chunks of ``DOT_ELEMENTS``
    (``perturb`` gives the same I for the same image and draw), so memory stays bounded at any N and samples."""
    dots = torch.empty(len(x), samples, dtype=torch.float64, device=x.device)
    for _, examples, draws in chunk_rows(len(x), samples, max(1, DOT_ELEMENTS // x[0].numel()), x.device):
        change, _ = _perturbed(perturb, x[examples], examples, draws)
        dots[examples, draws] = (attributions[examples] * change).flatten(1).sum(1).double()
    return dots


def infidelity_of(dots: Tensor, drops: Tensor, normalize: bool = True) -> Tensor:
    """Infidelity [N] from a map's dot products a.I and the output drops f(x) - f(x') ([N, samples] each): the
    mean over draws of (a.I - drop)^2, after rescaling a.I per image by beta = E[(a.I) drop] / E[(a.I)^2] when
    ``normalize`` (the authors' code; Captum's ``normalize=True``; beta = 0 where every a.I is 0)."""
    if normalize:
        denominator = (dots ** 2).mean(1, keepdim=True)
        beta = torch.where(denominator > 0, (dots * drops).mean(1, keepdim=True) / denominator.clamp(min=1e-300),
                           torch.zeros_like(denominator))
        dots = beta * dots
    return ((dots - drops) ** 2).mean(1)


def infidelity_scores(model: nn.Module, x: Tensor, attributions: Tensor, classes: Tensor, perturb, samples: int,
                      normalize: bool = True) -> Tensor:
    """Infidelity [N] (Yeh et al. 2019) of ``attributions`` (like ``x`` [N, ...]) for the logits of
    ``classes`` [N]: the mean over ``samples`` perturbations I of (sum_i a_i I_i - (f(x) - f(x')))^2, with
    ``perturb(x_rows, examples, samples)`` giving each row's I and perturbed input x' as a pair (I, x'),
    as Captum's ``perturb_func``, or I alone, meaning x' = x - I. ``normalize``
    rescales the attributions per example by beta = E[(a.I) df] / E[(a.I)^2] first (the authors'
    code; Captum's ``normalize=True``), which makes the score invariant to the attributions' scale.
    Equals Captum's ``metrics.infidelity`` given the same perturbations: ``infidelity_of`` the map's
    ``perturbation_dots`` and the model's ``perturbation_drops``."""
    return infidelity_of(perturbation_dots(x, attributions, perturb, samples),
                         perturbation_drops(model, x, classes, perturb, samples), normalize)


def infidelity(methods, model: nn.Module, data, *, perturbation="square", samples: int = 50, normalize: bool = True,
               binary: bool | Collection[str] = False, limit: int | None = None, seed: int = 0,
               model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Infidelity (Yeh et al. 2019) of each method's attributions for the class the model predicts on
    the clean image (its logit), over ``samples`` perturbations per image; lower is better.

    perturbation: "square" (``square_perturbations``: a random square of 1 to 10 px zeroed), or a
        callable ``(x_rows [R, ...], examples [R], samples [R]) -> (I, x')`` or ``-> I`` (x' = x - I), the
        perturbation of sample ``samples[r]`` of image ``examples[r]`` (the same for the same pair). Captum
        has no default perturbation; the authors' "Gaussian" mode is a noisy baseline, left out here.
    binary: for "square", I is the square's indicator rather than the change x - x': right for global
        attributions (IntegratedGradients, InputXGradient, DeepLIFT already multiply by x - x'), as
        Captum's documentation and the authors' ``binary_I`` say; local ones (the gradient) take False.
        True or False for every method, or the names of the methods that take the indicator (the others
        take the change: both score the same perturbed inputs, so they share the model's passes).
    normalize: the authors' optimal rescaling of the attributions (Captum's default is False; ours
        True, as the authors' code, so a method is not penalised for its scale).
    Attributions are the method's own, of the input's shape; precomputed values may be [N, C, H, W] or
    [N, H, W] (one value per pixel, applied to every channel). Layer methods have no attribution per
    input element and are refused. Row per method: ``infidelity`` with its 95% interval over images and
    ``binary`` (whether its I was the indicator). A callable perturbation is keyed by its qualified name,
    bytecode and closure.

    Shared passes: the perturbed inputs do not depend on the map, so every method of one call is scored
    from one run of the model over them (``perturbation_drops``, made once, and only when some method's row
    is not in the store); each map then only takes its dot products a.I (``perturbation_dots``). A
    method's number is the same alone or among others (tested).
    """
    call = call_arguments(locals(), units=("binary",))
    data, x = image_data(data, limit)
    named = named_methods(methods)
    if samples < 1:
        raise ValueError(f"samples must be a positive number; got {samples}")
    if isinstance(binary, bool):
        indicator = dict.fromkeys(named, binary)
    elif isinstance(binary, Collection) and not isinstance(binary, str) and set(binary) <= set(named):
        indicator = {name: name in set(binary) for name in named}
    else:
        raise ValueError(f"binary must be True, False or names among the methods ({', '.join(named)}); "
                         f"got {binary!r}")
    if perturbation == "square":
        perturbs = {flag: square_perturbations(x, samples, seed, flag) for flag in (False, True)}
        described = perturbation
    elif callable(perturbation):
        perturbs = dict.fromkeys((False, True), perturbation)
        described = getattr(perturbation, "__qualname__", type(perturbation).__name__)
    else:
        raise ValueError(f"perturbation must be 'square' or a callable (x_rows, examples, samples) -> I; "
                         f"got {perturbation!r}")
    with prepared(model):
        classes = predicted_classes(model, x, auto_rows(model, x[:1], gradients=False))
    # The perturbed inputs x' are the same whether I is the indicator or the change, so one run serves both.
    drops = cache(lambda: perturbation_drops(model, x, classes, perturbs[False], samples))

    def compute(method, name):
        if isinstance(method, Tensor):
            attributions = method[:len(x)].detach().to(x.device, x.dtype)
        else:
            attributions = explain_rows(method, model, x, classes, lambda a: a, name)
        # a map [N, H, W] (precomputed, or a method's such as FullGrad's) applies to every channel
        attributions = attributions[:, None] if attributions.ndim == 3 else attributions
        if attributions.ndim != 4 or len(attributions) != len(x) or attributions.shape[2:] != x.shape[2:]:
            raise ValueError(f"infidelity needs attributions of the input's shape {list(x.shape)} (or "
                             f"[N, H, W]); {name} gives {list(attributions.shape)}")
        dots = perturbation_dots(x, finite_maps(attributions, name).expand_as(x), perturbs[indicator[name]], samples)
        values = infidelity_of(dots, drops(), normalize)
        return {**mean_interval(values).as_row("infidelity"), "infidelity_each": values.tolist(), "images": len(x)}

    label = {"model": model_name, "perturbation": described, "samples": samples, "normalize": normalize,
             "seed": seed}
    rows = [row for name, method in named.items()
            for row in per_method(store, "infidelity", {name: method}, call, {**label, "binary": indicator[name]},
                                  compute)]
    return AuditResult("infidelity", rows)
