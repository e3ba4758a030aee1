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
    Combine,
    Deconvnet,
    DeepLift,
    DeepLiftShap,
    GradCAM,
    GradCAMPlusPlus,
    GradientShap,
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    IntegratedGradients,
    KernelSHAP,
    LayerMethod,
    LayerSaliency,
    LinearApprox,
    MetaStep,
    Method,
    NormGrad,
    Occlusion,
    Random,
    Saliency,
    SmoothGrad,
    SmoothGradCAMPlusPlus,
)

__version__ = "0.1.0"

__all__ = [
    "config", "Contrast", "heatmap", "Method", "LayerMethod", "Saliency", "InputXGradient",
    "GuidedBackprop", "Deconvnet", "IntegratedGradients", "SmoothGrad", "GradCAM",
    "GradCAMPlusPlus", "SmoothGradCAMPlusPlus", "GuidedGradCAM", "LayerSaliency", "NormGrad",
    "LinearApprox", "Combine", "Random", "Occlusion", "LIME", "CLIME", "KernelSHAP", "MetaStep",
    "DeepLift", "DeepLiftShap", "GradientShap",
]
