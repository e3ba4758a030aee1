"""Audits that say whether to believe an attribution: each returns an ``AuditResult``."""

from .axiomatic import completeness, input_invariance
from .brittleness import brittleness
from .class_sensitivity import class_sensitivity
from .complexity import complexity, sparseness
from .faithfulness_correlation import faithfulness_correlation
from .groundtruth import signal_coordinate, signal_mass
from .imputation import noisy_linear_impute
from .influence_checks import lds, loo_correlation, mislabel_detection
from .local_faithfulness import Neighbourhood, Recommendation, local_faithfulness, recommendation
from .metric_audit import DIRECTIONS, krippendorff_alpha, metric_audit
from .metrics import infidelity, insertion_deletion, pointing_game, relevance_mass, relevance_rank
from .monotonicity import monotonicity
from .profiles import activation_profiles, class_profiles
from .region_perturbation import irof, region_perturbation
from .results import AuditResult
from .road import road
from .roar import blurred, diffroar, mask_leak
from .robustness import local_lipschitz, relative_input_stability
from .sanity import emprt, mprt, random_logit, randomization, smprt
from .sensitivity_max import sensitivity_max
from .stats import Interval, difference_interval, mean_interval, verdict
from .unlearning import mia_efficacy, unlearning

__all__ = ["signal_mass", "signal_coordinate", "diffroar", "mask_leak", "blurred", "road", "noisy_linear_impute",
           "class_sensitivity", "randomization", "AuditResult", "local_faithfulness", "Neighbourhood",
           "recommendation", "Recommendation", "Interval", "mean_interval", "difference_interval", "verdict",
           "activation_profiles", "class_profiles", "unlearning", "mia_efficacy", "insertion_deletion",
           "infidelity", "pointing_game", "relevance_mass", "relevance_rank", "metric_audit", "krippendorff_alpha",
           "DIRECTIONS", "sensitivity_max", "faithfulness_correlation", "monotonicity",
           "loo_correlation", "lds", "mislabel_detection", "sparseness", "complexity", "mprt", "smprt", "emprt",
           "random_logit", "completeness", "input_invariance", "local_lipschitz", "relative_input_stability",
           "irof", "region_perturbation", "brittleness"]
