"""Sample-axis batching: many rows per example, evaluated in memory-bounded chunks.

A multi-sample method evaluates ``n_samples`` rows for each of ``B`` examples. Rows are laid
out sample-major (row r is sample r // B of example r % B) and run ``chunk`` at a time; the
per-row results are summed into per-example accumulators in place, so peak memory depends on
the chunk, never on the number of samples.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..config import config
from .forward import run_model

_row_bytes: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sum half-precision results in float32; keep float32/float64 as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def chunk_rows(n_examples: int, n_samples: int, chunk: int, device=None):
    """Yield (rows, examples, samples) LongTensors for each chunk of the sample-major row layout."""
    total = n_examples * n_samples
    for start in range(0, total, chunk):
        rows = torch.arange(start, min(start + chunk, total), device=device)
        yield rows, rows % n_examples, rows // n_examples


def sample_sum(n_examples: int, n_samples: int, chunk: int,
               fn: Callable[[Tensor, Tensor, Tensor], Sequence[Tensor]], device=None) -> list[Tensor]:
    """Per-example sums over samples of each tensor ``fn(rows, examples, samples)`` returns.

    ``fn`` gets three LongTensor[R] (global row id, example index, sample index) for one chunk
    and returns tensors of shape [R, ...]; the result holds one [n_examples, ...] sum for each.
    """
    sums: list[Tensor] | None = None
    for rows, examples, samples in chunk_rows(n_examples, n_samples, chunk, device):
        outs = fn(rows, examples, samples)
        if sums is None:
            sums = [torch.zeros((n_examples, *o.shape[1:]), dtype=accumulator_dtype(o.dtype), device=o.device)
                    for o in outs]
        for acc, out in zip(sums, outs, strict=False):
            acc.index_add_(0, examples.to(out.device), out.to(acc.dtype))
    return sums


@torch.inference_mode()
def sample_scores(model: nn.Module, target, n_examples: int, n_samples: int, chunk: int,
                  perturb: Callable[[Tensor, Tensor], Tensor], device=None) -> Tensor:
    """Scores [n_examples, n_samples] of the model on perturbed inputs, without gradients.

    ``perturb(examples, samples)`` builds the [R, ...] inputs of one chunk; ``target`` scores
    each row for its example. The evaluation half of every perturbation method.
    """
    scores = None
    for _, examples, samples in chunk_rows(n_examples, n_samples, chunk, device):
        out = target.scores(run_model(model, perturb(examples, samples), examples), examples)
        if scores is None:
            scores = torch.empty(n_examples, n_samples, dtype=accumulator_dtype(out.dtype), device=out.device)
        scores[examples.to(out.device), samples.to(out.device)] = out.to(scores.dtype)
    return scores


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def _saved_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of the distinct tensors autograd saves for a forward of ``x`` (input needing grad)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    leaf = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run_model(model, leaf.clone(), torch.zeros(len(x), dtype=torch.long, device=x.device))
    return sum(storages.values()) + _output_bytes(out) + 2 * leaf.numel() * leaf.element_size()


def _output_bytes(out) -> int:
    """Bytes of the tensors in a model output: a tensor, a dict / Hugging Face ModelOutput, a
    tuple, or a record holding one in ``.output`` (text models)."""
    if isinstance(out, Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, dict):
        return sum(_output_bytes(v) for v in out.values())
    if isinstance(out, (list, tuple)):
        return sum(_output_bytes(v) for v in out)
    return _output_bytes(out.output) if hasattr(out, "output") else 0


def bytes_per_row(model: nn.Module, x: Tensor) -> int:
    """Memory one more row costs in forward + backward: the growth of what autograd saves from
    one row to two (weights, saved once whatever the batch, cancel out), times 2 for the
    gradients backward holds beside them."""
    key = (tuple(x.shape[1:]), x.dtype, str(x.device))
    cache = _row_bytes.setdefault(model, {})
    if key not in cache:
        one = x[:1]
        cache[key] = 2 * max(1, _saved_bytes(model, torch.cat([one, one])) - _saved_bytes(model, one))
    return cache[key]


def _live_bytes(model: nn.Module, x: Tensor) -> int:
    """The largest input + output of one leaf module in an inference forward of ``x`` (at least the
    model's own input + output): roughly what an inference pass holds at once, where autograd holds
    every layer's. Its hooks live only for this one forward."""
    largest = 0

    def record(module, inputs, output):
        nonlocal largest
        largest = max(largest, _output_bytes(inputs) + _output_bytes(output))

    handles = [m.register_forward_hook(record) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.inference_mode():
            out = run_model(model, x, torch.zeros(len(x), dtype=torch.long, device=x.device))
    finally:
        for handle in handles:
            handle.remove()
    return max(largest, x.numel() * x.element_size() + _output_bytes(out))


def forward_bytes_per_row(model: nn.Module, x: Tensor) -> int:
    """Memory one more row costs in a forward pass without gradients (``_live_bytes`` of two rows minus
    one row's)."""
    key = ("forward", tuple(x.shape[1:]), x.dtype, str(x.device))
    cache = _row_bytes.setdefault(model, {})
    if key not in cache:
        one = x[:1]
        cache[key] = max(1, _live_bytes(model, torch.cat([one, one])) - _live_bytes(model, one))
    return cache[key]


def auto_rows(model: nn.Module, x: Tensor, gradients: bool = True) -> int:
    """Rows per pass: as many as ``config.memory_budget`` allows (at most ``config.max_chunk``);
    on CPU only as many as fill ``config.cpu_working_set``, but ``config.min_chunk`` at least.
    ``gradients=False`` sizes a pass without gradients (``sample_scores``), which holds one layer's
    activations rather than every layer's, so it takes more rows."""
    per_row = bytes_per_row(model, x) if gradients else forward_bytes_per_row(model, x)
    budget = config.memory_budget or _available_bytes(x.device) // 4
    rows = min(config.max_chunk, budget // per_row)
    if x.device.type == "cpu":
        rows = min(rows, max(config.min_chunk, config.cpu_working_set // per_row))
    return int(max(1, rows))
