"""Attention probabilities caught in the forward: eager attention, the probe, one attention pass.

Hugging Face ``transformers`` models are recognised by duck typing (gradaudit's core does not import
``transformers``):

- *Eager attention.* A submodule with a callable ``set_attn_implementation`` and a ``config`` whose
  ``_attn_implementation`` is not ``"eager"`` (sdpa, flash) computes attention in a fused kernel that
  never forms the probabilities. ``eager_attention(model)`` switches every such submodule to
  ``"eager"`` for the call and gives each its own implementation back afterwards, on success and on
  error.
- *Attention modules.* A module whose class name ends with ``Attention`` (``ViTAttention``,
  ``BertSelfAttention``, ``GPT2Attention``, ``LlamaAttention``, ...) and whose output is a tuple
  carrying, after the hidden states, a 4-D tensor [N, heads, T, S]: in eager mode those are the
  probabilities that multiply the values. ``AttentionProbe`` records them with forward hooks;
  a wrapper module returning the same tensor (``BertAttention`` around ``BertSelfAttention``)
  is counted once. Cross-attention (S != T) is left out.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .forward import run_model


def _switchable(model: nn.Module) -> list[nn.Module]:
    """Submodules (the model included) whose attention implementation can be set (Hugging Face models)."""
    return [m for m in model.modules() if callable(getattr(m, "set_attn_implementation", None))
            and isinstance(getattr(getattr(m, "config", None), "_attn_implementation", None), str)]


@contextmanager
def eager_attention(model: nn.Module):
    """Run ``model`` with eager attention in every Hugging Face submodule; restore each one's own
    ``config._attn_implementation`` on exit (outermost first, so nested models end as they were)."""
    found = [(m, m.config._attn_implementation) for m in _switchable(model)]
    try:
        for module, implementation in found:
            if implementation != "eager" and module.config._attn_implementation != "eager":
                module.set_attn_implementation("eager")
        yield model
    finally:
        for module, implementation in found:
            if module.config._attn_implementation != implementation:
                module.set_attn_implementation(implementation)


def _is_attention(module: nn.Module) -> bool:
    return type(module).__name__.endswith("Attention")


class AttentionProbe:
    """Context manager: record the attention probabilities [N, heads, T, T] of every self-attention
    call of ``model``'s forward, in call order (``.attentions``)."""

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if _is_attention(m)]
        self.attentions: list[Tensor] = []
        self._seen: set[int] = set()
        self._handles = []

    def __enter__(self):
        try:
            for module in self.modules:
                self._handles.append(module.register_forward_hook(self._record))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _record(self, module, inputs, output):
        if not isinstance(output, tuple):
            return
        for item in output[1:]:
            if isinstance(item, Tensor) and item.ndim == 4 and item.is_floating_point():
                if id(item) not in self._seen and item.shape[-1] == item.shape[-2]:
                    self._seen.add(id(item))
                    self.attentions.append(item)
                return


@dataclass
class AttentionPass:
    """What one forward (+ backward) saw: ``scores`` [R]; ``attentions``, one [N, heads, T, T] per
    self-attention call (N: the batch the attention ran on, R for most models); ``gradients`` of the
    summed scores with respect to each (None when not asked for)."""

    scores: Tensor
    attentions: list[Tensor]
    gradients: list[Tensor] | None


NO_ATTENTION = ("caught no attention probabilities in this model's forward: attention methods need a transformer "
                "whose attention modules (class names ending in 'Attention', as in Hugging Face transformers) "
                "return their probabilities [batch, heads, tokens, tokens] after the hidden states, in eager "
                "attention (Hugging Face models are switched to it for the call)")


def attention_pass(model: nn.Module, x: Tensor, target, rows: Tensor, *, gradients: bool) -> AttentionPass:
    """Run ``model`` on ``x`` [R, ...] in eager attention, catch the attention probabilities and, when
    ``gradients``, differentiate the summed per-row scores of ``target`` with respect to them.
    A ValueError when the forward had no attention to catch."""
    leaf = x.detach().requires_grad_(gradients and x.is_floating_point())
    with eager_attention(model), AttentionProbe(model) as caught, torch.set_grad_enabled(gradients):
        # The clone lets a model modify its input in place without touching the caller's tensor.
        output = run_model(model, leaf.clone(), rows)
        if not caught.attentions:
            raise ValueError(f"{type(getattr(model, 'explained_model', model)).__name__}: {NO_ATTENTION}")
        scores = target.scores(output, rows)
        grads = None
        if gradients:
            if scores.requires_grad:
                found = torch.autograd.grad(scores.sum(), caught.attentions, allow_unused=True)
            else:
                found = [None] * len(caught.attentions)
            grads = [torch.zeros_like(a) if g is None else g for a, g in zip(caught.attentions, found, strict=True)]
    return AttentionPass(scores.detach(), [a.detach() for a in caught.attentions], grads)
