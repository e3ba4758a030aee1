"""Figures and the HTML report (extra ``report``: matplotlib, jinja2)."""

from .figures import method_grid
from .html import write_report

__all__ = ["method_grid", "write_report"]
