"""One registry of the methods the commands know by name: ``--methods`` of ``audit``, ``--method``
of ``explain`` (one image or a folder in shards), and the commands to come.

Each entry builds a method from the few settings a command line gives (``samples``, ``steps``,
``layer``, ``seed``); ``LAYER_METHODS`` are those that need ``layer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..methods import (
    CLIME,
    LIME,
    LRP,
    AblationCAM,
    AttentionRollout,
    AttnLRP,
    Deconvnet,
    DeepLift,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GradientRollout,
    GuidedBackprop,
    HiResCAM,
    InputXGradient,
    IntegratedGradients,
    KernelSHAP,
    LayerCAM,
    LinearApprox,
    Method,
    NormGrad,
    Occlusion,
    Random,
    Saliency,
    ScoreCAM,
    SmoothGrad,
    Sobel,
    XGradCAM,
)


@dataclass(frozen=True)
class MethodSettings:
    """What a command line sets for its methods: SmoothGrad ``samples``, IG ``steps``, the CAM/NormGrad
    ``layer`` and the Random control's ``seed``. A preset has these fields too and can stand in for it."""

    samples: int = 32
    steps: int = 32
    layer: str = "auto"
    seed: int = 0


METHODS: dict[str, Callable[[MethodSettings], Method]] = {
    "saliency": lambda p: Saliency(),
    "inputxgradient": lambda p: InputXGradient(),
    "smoothgrad": lambda p: SmoothGrad(Saliency(), samples=p.samples, noise=0.15),
    "ig": lambda p: IntegratedGradients(steps=p.steps),
    "deeplift": lambda p: DeepLift(),
    "guidedbackprop": lambda p: GuidedBackprop(),
    "deconvnet": lambda p: Deconvnet(),
    "gradcam": lambda p: GradCAM(p.layer),
    "gradcampp": lambda p: GradCAMPlusPlus(p.layer),
    "normgrad": lambda p: NormGrad(p.layer),
    "linearapprox": lambda p: LinearApprox(p.layer),
    "scorecam": lambda p: ScoreCAM(p.layer),
    "layercam": lambda p: LayerCAM(p.layer),
    "xgradcam": lambda p: XGradCAM(p.layer),
    "hirescam": lambda p: HiResCAM(p.layer),
    "gradcamelementwise": lambda p: GradCAMElementWise(p.layer),
    "eigencam": lambda p: EigenCAM(p.layer),
    "eigengradcam": lambda p: EigenGradCAM(p.layer),
    "ablationcam": lambda p: AblationCAM(p.layer),
    "fullgrad": lambda p: FullGrad(),
    "rollout": lambda p: AttentionRollout(),
    "gradientrollout": lambda p: GradientRollout(),
    "attnlrp": lambda p: AttnLRP(),
    "lrp": lambda p: LRP(),                                   # zennit's EpsilonPlus
    "lrp-epsilon-plus-flat": lambda p: LRP("EpsilonPlusFlat"),
    "lrp-epsilon-alpha2-beta1": lambda p: LRP("EpsilonAlpha2Beta1"),
    "random": lambda p: Random(seed=p.seed),
    "sobel": lambda p: Sobel(),
}
LAYER_METHODS = ("gradcam", "gradcampp", "normgrad", "linearapprox", "scorecam", "layercam", "xgradcam", "hirescam",
                 "gradcamelementwise", "eigencam", "eigengradcam", "ablationcam")


def check_method_names(names: Iterable[str], flag: str) -> tuple[str, ...]:
    """``names`` as a tuple, each a key of ``METHODS``; otherwise a ValueError naming ``flag`` and the choices."""
    names = tuple(names)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"{flag}: unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if not names:
        raise ValueError(f"{flag} is empty; choose from {', '.join(METHODS)}")
    return names


def build_methods(names: Iterable[str], settings: MethodSettings) -> dict[str, Method]:
    """{name: method} for the registry's ``names``, built with ``settings``."""
    return {name: METHODS[name](settings) for name in names}


def linear_methods(samples: int = 256) -> dict[str, Method]:
    """The eight local-function-approximation methods of Han et al. (2022), as linear models. KernelSHAP
    gets a small ridge penalty (1e-3): with fewer samples than pixels (256 on 784 here) the unpenalised
    fit is undetermined, and ``KernelSHAP`` refuses it."""
    return {
        "Gradient": Saliency(abs=False),
        "InputXGradient": InputXGradient(),
        "SmoothGrad": SmoothGrad(Saliency(abs=False), samples=32, sigma=0.1),
        "IntegratedGradients": IntegratedGradients(steps=32),
        "LIME": LIME(samples=samples),
        "CLIME": CLIME(samples=samples, sigma=0.1),
        "KernelSHAP": KernelSHAP(samples=samples, penalty=1e-3),
        "Occlusion": Occlusion(window=1, stride=1),
    }


TEXT_METHODS: dict[str, Callable[[int], Method]] = {
    "ig": lambda steps: IntegratedGradients(steps=steps),
    "saliency": lambda steps: Saliency(abs=False),
    "inputxgradient": lambda steps: InputXGradient(),
    "smoothgrad": lambda steps: SmoothGrad(Saliency(abs=False), samples=steps),
}


def text_method(name: str, steps: int) -> Method:
    """``explain-text --method``: token scores keep their sign, so the gradient methods are signed here."""
    if name not in TEXT_METHODS:
        raise ValueError(f"--method must be one of {', '.join(TEXT_METHODS)}, reagent; got {name!r}")
    return TEXT_METHODS[name](steps)
