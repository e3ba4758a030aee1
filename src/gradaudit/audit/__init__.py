"""Audits that say whether to believe an attribution: each returns an ``AuditResult``."""

from .faithfulness import Neighbourhood, local_faithfulness
from .groundtruth import signal_mass
from .results import AuditResult
from .roar import blurred, diffroar
from .sanity import randomization
from .sensitivity import class_sensitivity

__all__ = ["signal_mass", "diffroar", "blurred", "class_sensitivity", "randomization", "AuditResult",
           "local_faithfulness", "Neighbourhood"]
