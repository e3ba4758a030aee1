"""Training the reference models: standard, PGD-robust, and vectorised ensembles for ROAR."""

from .ensemble import ensemble_accuracy, fit_ensemble
from .fit import accuracy, evaluate, fit
from .pgd import PGD

__all__ = ["fit", "evaluate", "accuracy", "PGD", "fit_ensemble", "ensemble_accuracy"]
