"""The AttnLRP / CP-LRP backward rules for transformers: norms, activations, gated MLPs, attention.

Rules of Achtibat et al. 2024 (AttnLRP) in their gradient x input form (as the ``lxt`` library's
"efficient" mode), while ``lrp_rules(variant, model)`` is active:

- LayerNorm (``F.layer_norm``), RMSNorm (``F.rms_norm``, and modules named ``*RMSNorm`` with a
  ``weight`` and an ``eps``/``variance_epsilon``): the identity rule, the standard deviation detached.
- Elementwise activations (``F.gelu``, ``F.silu``, tanh, ... and parameter-free modules whose class
  name ends with ``Activation``, ``GELU``, ``GELUTanh``, ``SiLU``, such as GPT-2's arithmetic
  ``NewGELUActivation``): the identity rule, grad_in = f(x) / (x + 1e-10) * grad_out.
- Gated MLPs (modules with ``gate_proj``, ``up_proj``, ``down_proj`` and ``act_fn``, as Llama's): the
  product act(gate(x)) * up(x) passes half of the gradient to each factor ("attnlrp") or none through
  the gate ("cp"), as lxt; the MLP is recomputed in its forward hook (its submodules run twice).
- ``"attnlrp"``: a matrix product of two tensors that both carry gradient (q k^T and attention x v;
  weights are frozen, so linear layers never qualify) passes half of the gradient to each factor
  (the uniform rule; q and k get a quarter overall, v a half, as lxt). Softmax keeps its gradient.
- ``"cp"`` (conservative propagation, Ali et al. 2022): softmax outputs are detached (attention is
  a constant), so relevance flows through the values only; matrix products keep their gradient.

Forward values are unchanged. Not handled: other elementwise products of two activations, and
anything inside fused kernels. A forward without attention the rules can catch (no softmax of an
activation, or no matrix product of two activations: a CNN; torch's ``nn.TransformerEncoder``, whose
attention runs inside ``F.multi_head_attention_forward``) is refused by the engine, never explained
by the activation and norm rules alone.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .attention import eager_attention

LRP_RULES = ("attnlrp", "cp")
IDENTITY_EPS = 1e-10
ACTIVATION_SUFFIXES = ("Activation", "GELU", "GELUTanh", "SiLU")

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm}
_ELEMENTWISE = {
    F.gelu, F.silu, F.mish, F.elu, F.celu, F.selu, F.relu, torch.relu, torch.Tensor.relu, F.leaky_relu, F.relu6,
    F.softplus, torch.tanh, torch.Tensor.tanh, F.tanh, torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid,
}


class _Identity(torch.autograd.Function):
    """Forward: ``y`` (= f(x), computed by the caller); backward to ``x``: y / (x + 1e-10) * grad (identity rule)."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(y.detach() / (x.detach() + IDENTITY_EPS))
        return y.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return ratio * grad, None


class _Scaled(torch.autograd.Function):
    """Identity forward; the gradient divided by ``factor`` (the uniform rule for products)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.factor, None


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) / (var + eps).sqrt().detach()
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def _rms_norm(x, normalized_shape, weight=None, eps=None):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps).detach()
    return y * weight if weight is not None else y


def _wants_grad(t) -> bool:
    return isinstance(t, Tensor) and t.requires_grad and torch.is_grad_enabled()


class _LRPMode(TorchFunctionMode):
    """The AttnLRP / CP-LRP rules on the forward run inside; ``caught`` counts the operations changed,
    ``softmaxes`` and ``products`` the attention operations seen (softmax of an activation; matrix product
    of two activations), whether or not the variant changes them."""

    def __init__(self, variant: str):
        super().__init__()
        self.variant = variant
        self.caught = self.softmaxes = self.products = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not args or not _wants_grad(args[0]):
            return func(*args, **kwargs)
        if func is F.layer_norm:
            self.caught += 1
            return _layer_norm(*args, **kwargs)
        if func is F.rms_norm:
            self.caught += 1
            return _rms_norm(*args, **kwargs)
        if func in _ELEMENTWISE and not (kwargs.get("inplace") or any(a is True for a in args[1:])):
            self.caught += 1
            return _Identity.apply(args[0], func(*args, **kwargs))
        if func in _SOFTMAX:
            self.softmaxes += 1
            if self.variant == "cp":
                self.caught += 1
                return func(*args, **kwargs).detach()
        if func in _MATMUL and len(args) == 2 and _wants_grad(args[1]):
            self.products += 1
            if self.variant == "attnlrp":
                self.caught += 1
                return func(_Scaled.apply(args[0], 2.0), _Scaled.apply(args[1], 2.0))
        return func(*args, **kwargs)

    def missing(self) -> str | None:
        """What the rules needed and the forward did not have (None when attention was caught)."""
        if self.softmaxes and self.products:
            return None
        return (f"AttnLRP (variant {self.variant!r}) needs attention it can catch: a softmax of activations and a "
                "matrix product of two activations (q k^T), called through torch's Python API as in Hugging Face's "
                f"eager attention; this model's forward had {self.softmaxes} such softmax(es) and {self.products} "
                "such product(s). Attention inside one fused call (torch's nn.MultiheadAttention and "
                "nn.TransformerEncoder, F.scaled_dot_product_attention) cannot be caught")


def _activation_hook(module, inputs, output):
    x = inputs[0] if inputs else None
    if not (_wants_grad(x) and isinstance(output, Tensor) and output.shape == x.shape):
        return None
    return _Identity.apply(x, output)


def _rms_norm_hook(module, inputs, output):
    x = inputs[0] if inputs else None
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if not (_wants_grad(x) and isinstance(output, Tensor) and isinstance(eps, float)):
        return None
    weight = getattr(module, "weight", None)
    y = _rms_norm(x.float(), x.shape[-1:], None, eps).to(x.dtype)
    return y * weight if isinstance(weight, Tensor) else y


def _gated_mlp_hook(variant: str):
    """down(act(gate(x)) * up(x)) recomputed with the product's gradient halved to each factor
    ("attnlrp", lxt's ``gated_mlp_forward``) or with no gradient through the gate ("cp")."""

    def hook(module, inputs, output):
        x = inputs[0] if inputs else None
        if not _wants_grad(x):
            return None
        gate = module.gate_proj(x)
        if variant == "cp":
            return module.down_proj(module.act_fn(gate.detach()) * module.up_proj(x))
        return module.down_proj(_Scaled.apply(module.act_fn(gate) * module.up_proj(x), 2.0))

    return hook


def _is_gated_mlp(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Module) for n in ("gate_proj", "up_proj", "down_proj", "act_fn"))


def _hooked_modules(model: nn.Module, variant: str):
    for module in model.modules():
        name = type(module).__name__
        leaf = not list(module.children()) and not list(module.parameters(recurse=False))
        if leaf and name.endswith(ACTIVATION_SUFFIXES):
            yield module, _activation_hook
        elif name.endswith("RMSNorm") and not isinstance(module, nn.RMSNorm):
            yield module, _rms_norm_hook
        elif _is_gated_mlp(module):
            yield module, _gated_mlp_hook(variant)


@contextmanager
def lrp_rules(variant: str, model: nn.Module):
    """AttnLRP (``"attnlrp"``) or CP-LRP (``"cp"``) backward rules for the forwards of ``model`` run
    inside (see the module docstring); eager attention for the call. Yields the mode (``.caught``
    counts the operations it changed, ``.missing()`` says what it needed and did not catch); hooks and
    attention implementations are restored on exit."""
    if variant not in LRP_RULES:
        raise ValueError(f"variant must be one of {LRP_RULES}, got {variant!r}")
    handles = []
    with eager_attention(model):
        try:
            for module, hook in _hooked_modules(model, variant):
                handles.append(module.register_forward_hook(hook))
            with _LRPMode(variant) as mode:
                yield mode
        finally:
            for handle in handles:
                handle.remove()
