"""The result every audit returns: rows, a table and a plot."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AuditResult:
    """``rows``: one dict per finished unit. ``table()`` gives a pandas DataFrame; ``plot()`` a
    matplotlib figure drawn by the audit's own plotter. ``extra``: side tables (name -> rows),
    e.g. DiffROAR's mask-leak check."""

    audit: str
    rows: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self, ax=None):
        from ..report.plots import PLOTTERS

        return PLOTTERS[self.audit](self.table(), ax=ax)
