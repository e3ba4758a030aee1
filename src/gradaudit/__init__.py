"""gradaudit: saliency maps you can check.

    import gradaudit as ga
    attr = ga.IntegratedGradients(steps=32)(model, x, target=y)
"""

from .config import config
from .engine.target import Contrast
from .maps import heatmap
from .methods import (
    CLIME,
    LIME,
    LRP,
    AblationCAM,
    AttentionRollout,
    AttnLRP,
    Combine,
    Deconvnet,
    DeepLift,
    DeepLiftShap,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GradientRollout,
    GradientShap,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    InputXGradient,
    IntegratedGradients,
    KernelSHAP,
    LayerCAM,
    LayerMethod,
    LayerSaliency,
    LinearApprox,
    MetaStep,
    Method,
    NormGrad,
    Occlusion,
    Random,
    Saliency,
    ScoreCAM,
    SmoothGrad,
    SmoothGradCAMPlusPlus,
    Sobel,
    XGradCAM,
    targets,
)

__version__ = "0.1.0"

SUBPACKAGES = ("audit", "data", "models", "train", "unlearn", "text", "report", "influence")


def __getattr__(name: str):
    """``ga.data``, ``ga.audit``, ... as the docs write them, imported on first use (import time stays
    that of the methods alone)."""
    if name in SUBPACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gradaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBPACKAGES])

__all__ = [
    "config", "Contrast", "heatmap", "Method", "LayerMethod", "Saliency", "InputXGradient",
    "GuidedBackprop", "Deconvnet", "IntegratedGradients", "SmoothGrad", "GradCAM",
    "GradCAMPlusPlus", "SmoothGradCAMPlusPlus", "GuidedGradCAM", "LayerSaliency", "NormGrad",
    "LinearApprox", "Combine", "Random", "Sobel", "Occlusion", "LIME", "CLIME", "KernelSHAP", "MetaStep",
    "DeepLift", "DeepLiftShap", "GradientShap", "targets", "AttentionRollout", "GradientRollout", "AttnLRP", "LRP",
    "ScoreCAM", "LayerCAM", "XGradCAM", "HiResCAM", "GradCAMElementWise", "EigenCAM", "EigenGradCAM", "AblationCAM",
    "FullGrad",
]
