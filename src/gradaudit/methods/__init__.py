"""Named attribution recipes on top of the engine, and ready-made targets (``targets``)."""

from . import targets
from .attention import AttentionRollout, AttnLRP, GradientRollout
from .base import LayerMethod, Method
from .cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from .control import Random, Sobel
from .deeplift import DeepLift, DeepLiftShap
from .fullgrad_cam import FullGrad
from .gradient import Deconvnet, GuidedBackprop, InputXGradient, Saliency
from .layer_saliency import Combine, LayerSaliency, LinearApprox, NormGrad
from .lrp import LRP
from .masked_cam import AblationCAM, ScoreCAM
from .meta import MetaStep
from .noise import SmoothGrad
from .path import GradientShap, IntegratedGradients
from .perturb import CLIME, LIME, KernelSHAP, Occlusion

__all__ = [
    "Method", "LayerMethod", "Saliency", "InputXGradient", "GuidedBackprop", "Deconvnet",
    "IntegratedGradients", "SmoothGrad", "GradCAM", "GradCAMPlusPlus", "SmoothGradCAMPlusPlus",
    "GuidedGradCAM", "LayerSaliency", "NormGrad", "LinearApprox", "Combine", "Random", "Sobel",
    "Occlusion", "LIME", "CLIME", "KernelSHAP", "MetaStep", "DeepLift", "DeepLiftShap", "GradientShap", "targets",
    "AttentionRollout", "GradientRollout", "AttnLRP", "LRP",
    "ScoreCAM", "LayerCAM", "XGradCAM", "HiResCAM", "GradCAMElementWise", "EigenCAM", "EigenGradCAM", "AblationCAM",
    "FullGrad",
]
