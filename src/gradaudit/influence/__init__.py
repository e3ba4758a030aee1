"""Training-data attribution: which training examples made a prediction (EK-FAC influence, TRAK, TracIn).

``fit(model, train, strategy="ekfac")`` estimates the damped Gauss-Newton matrix of the mean training
loss; its ``scores(queries, train)`` [Q, N] are grad L(q)^T (G + lambda)^-1 grad L(z), positive when
the training example helps (upweighting it lowers the query's loss), not divided by N.
"""

from .ensemble import Ensemble
from .fit import fit, load
from .fitted import Influence
from .strategies import STRATEGIES
from .top import Top, top
from .tracin import tracin
from .trak import Trak

__all__ = ["fit", "load", "Influence", "Ensemble", "Trak", "STRATEGIES", "top", "Top", "tracin"]
