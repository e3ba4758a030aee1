"""The main job: train standard and robust models on BlockMNIST, explain, audit, report.

``run(preset, out)`` is what ``gradaudit audit`` calls. Every finished result goes to
``OUT/results.sqlite`` at once and trained models to ``OUT/models/``, so re-running the same
command after an interrupt skips finished work.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .. import data, models, train
from ..methods import (
    CLIME, LIME, Deconvnet, GradCAM, GradCAMPlusPlus, GuidedBackprop, InputXGradient, IntegratedGradients,
    KernelSHAP, LinearApprox, NormGrad, Occlusion, Random, Saliency, SmoothGrad,
)
from ..report import method_grid, write_report
from ..report.reading import headline
from ..store import Store
from .common import named_methods
from .faithfulness import DEFAULT_NEIGHBOURHOODS, local_faithfulness
from .groundtruth import signal_mass
from .roar import diffroar
from .sanity import randomization
from .sensitivity import class_sensitivity


@dataclass(frozen=True)
class Preset:
    """Every setting of a run. ``methods`` are names from ``METHODS``."""

    digits: tuple = (0, 1)
    copies: int = 2
    source: str | None = None
    epochs: int = 4
    width: int = 16
    adversary: dict = field(default_factory=lambda: {"norm": "linf", "eps": 0.3, "steps": 7})
    methods: tuple = ("saliency", "smoothgrad", "ig", "gradcam", "normgrad", "random")
    samples: int = 16
    steps: int = 16
    layer: str = "conv2"
    fractions: tuple = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    repeats: int = 2
    retrain_epochs: int = 4
    retrain_hidden: int = 128
    fill: float | str = 0.0
    blur_control: bool = False
    audit_images: int = 200
    faithfulness: bool = False
    seed: int = 0


PRESETS = {
    "quick": Preset(),
    "paper": Preset(copies=1, epochs=20, samples=50, steps=50, repeats=5, retrain_epochs=20, retrain_hidden=256,
                    fractions=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), blur_control=True,
                    audit_images=1000, methods=("saliency", "inputxgradient", "smoothgrad", "ig", "guidedbackprop",
                                                "gradcam", "gradcampp", "normgrad", "random")),
    "tiny": Preset(copies=1, epochs=1, samples=2, steps=2, fractions=(0.05, 0.2), repeats=1, retrain_epochs=1,
                   retrain_hidden=16, audit_images=20, adversary={"norm": "linf", "eps": 0.3, "steps": 2},
                   methods=("saliency", "gradcam", "random")),
}

METHODS = {
    "saliency": lambda p: Saliency(),
    "inputxgradient": lambda p: InputXGradient(),
    "smoothgrad": lambda p: SmoothGrad(Saliency(), samples=p.samples, noise=0.15),
    "ig": lambda p: IntegratedGradients(steps=p.steps),
    "guidedbackprop": lambda p: GuidedBackprop(),
    "deconvnet": lambda p: Deconvnet(),
    "gradcam": lambda p: GradCAM(p.layer),
    "gradcampp": lambda p: GradCAMPlusPlus(p.layer),
    "normgrad": lambda p: NormGrad(p.layer),
    "linearapprox": lambda p: LinearApprox(p.layer),
    "random": lambda p: Random(seed=p.seed),
}


def linear_methods(samples: int = 256) -> dict:
    """The eight local-function-approximation methods of Han et al. (2022), as linear models."""
    return {
        "Gradient": Saliency(abs=False),
        "InputXGradient": InputXGradient(),
        "SmoothGrad": SmoothGrad(Saliency(abs=False), samples=32, sigma=0.1),
        "IntegratedGradients": IntegratedGradients(steps=32),
        "LIME": LIME(samples=samples),
        "CLIME": CLIME(samples=samples, sigma=0.1),
        "KernelSHAP": KernelSHAP(samples=samples),
        "Occlusion": Occlusion(window=1, stride=1),
    }


def preset(name: str, **overrides) -> Preset:
    """A named preset with the given settings replaced (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    unknown = [m for m in chosen.get("methods", ()) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    return replace(PRESETS[name], **chosen)


def _trained(kind: str, settings: Preset, train_set, test_set, folder: Path) -> torch.nn.Module:
    """The standard or robust model: loaded from ``folder`` if a previous run saved it."""
    torch.manual_seed(settings.seed)
    model = models.small_cnn(in_shape=(1, 56, 28), classes=len(settings.digits), width=settings.width)
    path = folder / f"{kind}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    adversary = train.PGD(**settings.adversary) if kind == "robust" else None
    print(f"training the {kind} model ({settings.epochs} epochs{', PGD ' + str(settings.adversary) if adversary else ''})")
    train.fit(model, train_set, epochs=settings.epochs, seed=settings.seed, adversary=adversary)
    scores = train.evaluate(model, test_set, train.PGD(**settings.adversary))
    print(f"  {kind}: clean test accuracy {scores['clean']:.3f}, adversarial {scores['adversarial']:.3f}")
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)
    return model


def run(settings: Preset, out: str | Path) -> dict:
    """Train, explain, audit and report; returns the headline numbers."""
    out = Path(out)
    start = time.perf_counter()
    store = Store(out / "results.sqlite")
    try:
        store.put("settings", {"run": str(len(store.rows("settings")))}, {"settings": asdict(settings)})
        kwargs = {"digits": settings.digits, "copies": settings.copies, "seed": settings.seed, "source": settings.source}
        train_set, test_set = data.blockmnist("train", **kwargs), data.blockmnist("test", **kwargs)
        print(f"BlockMNIST digits {settings.digits}: {len(train_set)} train / {len(test_set)} test images")
        nets = {kind: _trained(kind, settings, train_set, test_set, out / "models") for kind in ("standard", "robust")}
        methods = named_methods([METHODS[m](settings) for m in settings.methods])
        examples = slice(0, 6)
        for kind, net in nets.items():
            maps = {name: m(net, test_set.x[examples], test_set.y[examples]) for name, m in methods.items()}
            method_grid(test_set.x[examples], maps, out / "figures" / f"{kind}-model.png",
                        titles=[f"label {int(v)}" for v in test_set.y[examples]])

        def retrain_model():
            return models.mlp(in_shape=(1, 56, 28), classes=len(settings.digits), hidden=settings.retrain_hidden)

        limit = settings.audit_images
        for kind, net in nets.items():
            print(f"auditing the {kind} model")
            common = {"model_name": kind, "store": store}
            signal_mass(methods, net, test_set, limit=limit, **common)
            diffroar(methods, net, train_set, test_set, model_fn=retrain_model, fractions=settings.fractions,
                     repeats=settings.repeats, epochs=settings.retrain_epochs, fill=settings.fill,
                     blur_control=settings.blur_control, seed=settings.seed, **common)
            sensitive = {n: m for n, m in methods.items() if n != "Random"}
            class_sensitivity(sensitive, net, test_set, limit=limit, **common)
            randomization(sensitive, net, test_set, limit=min(limit, 100), seed=settings.seed, **common)
            if settings.faithfulness:
                local_faithfulness(linear_methods(), net, test_set, neighbourhoods=DEFAULT_NEIGHBOURHOODS,
                                   samples=128, limit=8, seed=settings.seed, **common)
        results = {audit: store.rows(audit) for audit in ("signal_mass", "diffroar")}
    finally:
        store.close()
    report = write_report(out)
    numbers = headline(results)
    numbers["seconds"] = time.perf_counter() - start
    numbers["report"] = str(report.resolve())
    return numbers
