"""Figures and reports (extra ``report``: matplotlib)."""

from .figures import method_grid

__all__ = ["method_grid"]
