"""Argument checks with messages that name the argument and what was expected."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn


def check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def check_inputs(inputs, needs_gradients: bool = True) -> Tensor:
    """Validate ``inputs`` ([B, ...] floating-point, finite) and return it."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape [batch, ...], got {type(inputs).__name__}")
    if inputs.ndim < 2 or len(inputs) == 0:
        raise ValueError(f"inputs must have a non-empty batch axis, shape [batch, ...]; got {list(inputs.shape)}")
    if needs_gradients and not inputs.is_floating_point():
        raise TypeError(
            f"inputs has dtype {inputs.dtype}, but gradient methods need floating-point inputs; "
            "for token ids, attribute to the embedding layer instead (feed the embeddings, "
            "or use gradaudit.text.TextExplainer)"
        )
    if inputs.is_floating_point():
        bad = (~torch.isfinite(inputs)).sum().item()
        if bad:
            raise ValueError(f"inputs contains {bad} NaN or infinite values; attributions need finite inputs")
    return inputs


def check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_batch_size(batch_size) -> None:
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_nonnegative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
