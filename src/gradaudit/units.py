"""Units of work and the executor every audit can run them on here (``LocalExecutor``).

A unit is a function and its arguments (one method's retraining ensemble for one model, or a
slice of its cells, or a shard of images to map). An executor runs units and hands each result
back to the caller, which alone writes the store. Audits take any executor with this shape;
the Ray executor lives with the jobs (``gradaudit.jobs.executor``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    """``function(*args)`` on a worker; ``name`` says which cells it computes (progress and errors)."""

    name: str
    function: Callable
    args: tuple


class UnitsFailed(RuntimeError):
    """Some units failed for good (after the executor's retries); the others' results were handed back."""


class LocalExecutor:
    """Every unit in this process, in order."""

    name = "local"
    workers = 1

    def share(self, value, pins: tuple = ()):
        """``value`` itself: in one process nothing needs sharing."""
        return value

    def run(self, units: list[Unit], on_result: Callable[[Unit, object], None]) -> None:
        for unit in units:
            on_result(unit, unit.function(*unit.args))

    def close(self) -> None:
        pass
