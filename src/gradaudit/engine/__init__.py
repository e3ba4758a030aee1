"""The one backprop engine: every gradient method runs through ``backprop``.

Only this package touches hooks and autograd internals; methods are recipes on top of it.
"""

from .backprop import LayerOutput, Pass, backprop, observe, predict, survey
from .chunks import auto_rows, sample_scores, sample_sum
from .edit import edited_output
from .forward import RowConditioned, select_rows
from .guard import prepared
from .probe import resolve_layer
from .target import Contrast, Target, as_target

__all__ = [
    "Pass", "RowConditioned", "backprop", "observe", "predict", "select_rows", "survey", "LayerOutput",
    "edited_output", "auto_rows", "sample_sum", "sample_scores", "prepared", "resolve_layer", "Contrast", "Target",
    "as_target",
]
