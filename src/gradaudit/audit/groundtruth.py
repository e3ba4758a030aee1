"""Ground-truth audit on BlockMNIST: how much attribution lands on the signal block."""

from __future__ import annotations

from torch import nn

from ..store import Store
from .common import importance, memo, named_methods
from .results import AuditResult


def signal_mass(methods, model: nn.Module, data, *, top: float = 0.1, limit: int | None = None,
                model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Share of |attribution| on the signal block, and share of the top-``top`` attributed pixels
    inside it, averaged over the images of ``data`` (a BlockMNIST dataset; first ``limit``).

    A map that ignores the signal scores the block's area share (0.5 for BlockMNIST).
    """
    x, y, mask = data.x[:limit], data.y[:limit], data.signal_mask[:limit, 0]
    rows = []
    for name, method in named_methods(methods).items():
        def compute(method=method):
            maps = importance(method, model, x, y, desc=f"signal mass {name}")
            mass = (maps * mask).sum((1, 2)) / maps.sum((1, 2)).clamp(min=1e-12)
            count = max(1, int(round(top * maps[0].numel())))
            top_pixels = maps.flatten(1).topk(count, dim=1).indices
            inside = mask.flatten(1).gather(1, top_pixels).float().mean(1)
            return {"signal_mass": mass.mean().item(), "signal_mass_std": mass.std().item(),
                    "top_in_signal": inside.mean().item(), "images": len(x)}

        rows.append(memo(store, "signal_mass", {"model": model_name, "method": name, "top": top}, compute))
    return AuditResult("signal_mass", rows)
