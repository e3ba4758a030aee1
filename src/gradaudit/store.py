"""The results store: one SQLite file per run; each finished unit of work is written at once.

Rows are keyed by (audit, key) where key is canonical JSON of the unit's settings, so a
re-run skips what is stored and an interrupt (even kill -9) loses only the unit in flight.
Queries are parameterised; values are JSON, never code.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def canonical(settings: dict) -> str:
    """A stable text key for a dict of settings."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


class Store:
    """Append-only rows of JSON per audit in ``path`` (created with its folder if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (audit TEXT NOT NULL, key TEXT NOT NULL, "
            "row TEXT NOT NULL, PRIMARY KEY (audit, key))"
        )
        self._db.commit()

    def get(self, audit: str, settings: dict) -> dict | None:
        found = self._db.execute(
            "SELECT row FROM results WHERE audit = ? AND key = ?", (audit, canonical(settings))
        ).fetchone()
        return json.loads(found[0]) if found else None

    def put(self, audit: str, settings: dict, row: dict) -> None:
        """Store ``row`` (settings merged in) and commit now; an existing key is kept as is."""
        self._db.execute(
            "INSERT OR IGNORE INTO results (audit, key, row) VALUES (?, ?, ?)",
            (audit, canonical(settings), json.dumps({**settings, **row}, default=str)),
        )
        self._db.commit()

    def rows(self, audit: str) -> list[dict]:
        return [json.loads(r[0]) for r in self._db.execute(
            "SELECT row FROM results WHERE audit = ? ORDER BY rowid", (audit,))]

    def audits(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT audit FROM results ORDER BY audit")]

    def close(self) -> None:
        self._db.close()
