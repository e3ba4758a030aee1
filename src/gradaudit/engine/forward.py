"""The model's forward as every pass runs it: row-conditioned models and the one call that feeds them their rows."""

from __future__ import annotations

from torch import Tensor, nn


class RowConditioned(nn.Module):
    """A model whose forward also needs the example each row belongs to: ``forward(x, rows)``
    with ``rows`` LongTensor[R]. Token sequences are one case: every example has its own
    attention mask and fixed continuation, while methods expand rows along samples."""

    def select(self, rows: Tensor) -> RowConditioned:
        """This model for a new batch whose example i is example ``rows[i]`` of this one."""
        return _SelectedRows(self, rows)


class _SelectedRows(RowConditioned):
    def __init__(self, base: RowConditioned, rows: Tensor):
        super().__init__()
        self.base, self.index = base, rows
        self.training = base.training

    def forward(self, x, rows):
        return self.base(x, self.index[rows.to(self.index.device)])


def select_rows(model: nn.Module, rows: Tensor) -> nn.Module:
    """``model`` for a batch whose example i is example ``rows[i]`` (unchanged unless row-conditioned)."""
    return model.select(rows) if isinstance(model, RowConditioned) else model


def run_model(model: nn.Module, x: Tensor, rows: Tensor):
    """``model``'s output on ``x`` [R, ...] (``rows`` [R]: each row's example, for a row-conditioned model);
    a RuntimeError inside the model becomes a ValueError naming the per-example input shape."""
    try:
        return model(x, rows) if isinstance(model, RowConditioned) else model(x)
    except RuntimeError as err:
        raise ValueError(f"model(inputs) failed for inputs with per-example shape {list(x.shape[1:])}: {err}") from err
