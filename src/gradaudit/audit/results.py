"""The result every audit returns: rows, a table and a plot."""

from __future__ import annotations

from dataclasses import dataclass, field

from .plots import PLOTTERS


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
        """The audit's figure (a matplotlib Figure); ``ax``: draw into this axis instead of a new figure."""
        plotter = PLOTTERS.get(self.audit)
        if plotter is None:
            raise NotImplementedError(f"no plotter for the {self.audit!r} audit: add one to gradaudit.audit.plots."
                                      f"PLOTTERS (it has {', '.join(sorted(PLOTTERS))}); its rows are in .table()")
        if not self.rows:
            raise ValueError(f"the {self.audit!r} result has no rows to plot")
        return plotter(self.table(), ax=ax)
