"""The results store: one SQLite file per run; each finished unit of work is written at once.

Rows are keyed by (audit, key): an audit's unit is keyed by ``keys.key`` (a digest of everything that
made it), a job's side table (settings, inputs) by canonical JSON of a small dict. A re-run skips what is
stored and an interrupt (even kill -9) loses only the unit in flight. A file written under another key
scheme (``keys.VERSION``, kept as SQLite's ``user_version``) is refused, never read as if its rows answered
for the new keys. Queries are parameterised; values are JSON, never code.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .keys import VERSION


def canonical(settings: dict | str) -> str:
    """A stable text key: a ``keys.key`` digest as it is, a dict of settings as canonical JSON."""
    if isinstance(settings, str):
        return settings
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


class Store:
    """Append-only rows of JSON per audit in ``path`` (created with its folder if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        scheme = self._db.execute("PRAGMA user_version").fetchone()[0]
        written = self._db.execute("SELECT name FROM sqlite_master WHERE name = 'results'").fetchone() is not None
        if written and scheme != VERSION:
            self._db.close()
            raise ValueError(f"the store {str(self.path)!r} was written by another version of gradaudit (key scheme "
                             f"{scheme}, this one reads {VERSION}): its rows are not keyed by everything that made "
                             "them, so none can be served; use a new run folder or delete that file")
        if scheme != VERSION:
            self._db.execute(f"PRAGMA user_version = {VERSION}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (audit TEXT NOT NULL, key TEXT NOT NULL, "
            "row TEXT NOT NULL, PRIMARY KEY (audit, key))"
        )
        self._db.commit()

    def get(self, audit: str, settings: dict | str) -> dict | None:
        found = self._db.execute(
            "SELECT row FROM results WHERE audit = ? AND key = ?", (audit, canonical(settings))
        ).fetchone()
        return json.loads(found[0]) if found else None

    def put(self, audit: str, settings: dict | str, row: dict) -> None:
        """Store ``row`` (a dict of settings merged in) and commit now; an existing key is kept as is."""
        merged = {**settings, **row} if isinstance(settings, dict) else row
        self._db.execute(
            "INSERT OR IGNORE INTO results (audit, key, row) VALUES (?, ?, ?)",
            (audit, canonical(settings), json.dumps(merged, default=str)),
        )
        self._db.commit()

    def rows(self, audit: str) -> list[dict]:
        return [json.loads(r[0]) for r in self._db.execute(
            "SELECT row FROM results WHERE audit = ? ORDER BY rowid", (audit,))]

    def audits(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT audit FROM results ORDER BY audit")]

    def close(self) -> None:
        self._db.close()
