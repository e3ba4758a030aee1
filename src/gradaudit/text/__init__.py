"""Token attribution for language models (extra ``text``): gradient methods on the input
embeddings of Hugging Face models, contrastive targets, GrAInS steering and ReAGent; and which training
sequences make a completion likely (``influence``, on ``gradaudit.influence``)."""

from .explainer import GenerationScores, TextExplainer, TokenScores
from .influence import SequenceInfluence, influence
from .loading import load
from .reagent import MaskedLMReplacer, RandomReplacer, reagent
from .steering import Steering, grains
from .targets import Contrast, SimilarTo, mean_pooled

__all__ = ["TextExplainer", "TokenScores", "GenerationScores", "Contrast", "SimilarTo", "mean_pooled", "grains",
           "Steering", "reagent", "RandomReplacer", "MaskedLMReplacer", "load",
           "influence", "SequenceInfluence"]
