"""Weight saliency and machine unlearning (SalUn and its baselines); the audit is ``audit.unlearning``."""

from .methods import (
    MASKS,
    Batch,
    FineTune,
    GradientAscent,
    L1Sparse,
    RandomLabel,
    Retrain,
    SalUn,
    Unlearner,
    reinitialised,
)
from .saliency import WeightMasks, gradient_magnitudes, weight_saliency
from .split import SCENARIOS, ForgetSplit, forget_split

__all__ = ["weight_saliency", "gradient_magnitudes", "WeightMasks", "Unlearner", "Batch", "Retrain", "FineTune",
           "GradientAscent", "RandomLabel", "SalUn", "L1Sparse", "MASKS", "reinitialised", "forget_split",
           "ForgetSplit", "SCENARIOS"]
