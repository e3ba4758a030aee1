"""Training the reference models: recipes, standard and PGD-robust training, vectorised ensembles."""

from .ensemble import ensemble_accuracy, fit_ensemble
from .fit import accuracy, evaluate, fit
from .pgd import PGD
from .recipe import Recipe

__all__ = ["fit", "evaluate", "accuracy", "PGD", "Recipe", "fit_ensemble", "ensemble_accuracy"]
