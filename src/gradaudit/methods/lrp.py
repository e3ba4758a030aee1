"""Layer-wise relevance propagation for CNNs and MLPs (Bach et al. 2015; Montavon et al. 2019) with zennit's
composites: the engine's ``lrp_composites`` rules on one forward + backward; the input's relevance is the map."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass

from ..engine.lrp_composites import COMPOSITES, Composite
from ..engine.lrp_layers import AlphaBeta, Epsilon, Flat, Gamma, LayerRule, WSquare, ZBox, ZPlus, as_bound
from .gradient import InputGradientMethod

__all__ = ["LRP", "COMPOSITES", "LayerRule", "Epsilon", "ZPlus", "AlphaBeta", "Gamma", "Flat", "WSquare", "ZBox"]


@dataclass(frozen=True)
class LRP(InputGradientMethod):
    """LRP with a zennit composite; input-shaped relevance, which starts at the target's score: the relevance of
    the output is y * ds/dy (for a class, its logit at that class: zennit's one-hot output gradient times the
    output). Equal to zennit 0.5.1 within 1e-6 (float64) on CNNs with BatchNorm and residual blocks
    (tests/test_lrp.py).

    composite: "EpsilonPlus" (z+ on convolutions, epsilon on dense layers), "EpsilonPlusFlat" (flat on the first
        layer), "EpsilonAlpha2Beta1", "EpsilonAlpha2Beta1Flat" or "EpsilonGammaBox" (z^B on the first
        convolution, gamma on the others; needs ``low`` and ``high``).
    epsilon: the epsilon rule's stabiliser (zennit's default 1e-6; the other rules use 1e-6).
    rules: {layer name or module type: rule}, overriding the composite (names before types); a rule is
        "epsilon", "zplus", "alpha2beta1", "alpha1beta0", "gamma", "flat", "wsquare", "zbox" (with this
        method's settings) or a rule object (``Epsilon(0.1)``, ``AlphaBeta(3, 2)``, ``Gamma(0.5)``, ...).
    gamma: the gamma rule's gamma (zennit's 0.25).
    low, high: the box rule's input bounds: numbers or tensors broadcastable to the input ([1, C, 1, 1] per
        channel).
    BatchNorm right after a dense or convolutional layer is folded into it for the pass (the model is not
    changed). A model with an operation no rule covers (LayerNorm, attention, products of activations, ...) is
    refused with a ValueError naming it, never explained by its gradient there.
    """

    composite: str = "EpsilonPlus"
    epsilon: float = 1e-6
    rules: Mapping | tuple | None = None
    _: KW_ONLY
    gamma: float = 0.25
    low: object = None
    high: object = None

    def __post_init__(self):
        for key in ("epsilon", "gamma"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
                raise ValueError(f"{key} must be a number >= 0, got {value!r}")
        for key in ("low", "high"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, as_bound(key, getattr(self, key)))
        rules = self.rules
        if isinstance(rules, Mapping):
            rules = tuple(rules.items())
        elif rules is not None and not (isinstance(rules, tuple) and all(
                isinstance(p, tuple) and len(p) == 2 for p in rules)):
            raise ValueError(f"rules must be a mapping {{layer name or module type: rule}}, got {type(rules).__name__}")
        object.__setattr__(self, "rules", rules)
        # Built (and so checked: composite name, rule names, box bounds) once, here.
        object.__setattr__(self, "composite_rules", Composite(self.composite, float(self.epsilon), float(self.gamma),
                                                              self.low, self.high, self.rules or ()))

    @property
    def rule(self) -> Composite:
        return self.composite_rules
