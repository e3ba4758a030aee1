"""A run folder answers for its settings.

A command writes its settings into the run folder before any work, and a rerun into the same
folder resumes only when every setting that changes a stored number is the same: otherwise it
is refused before anything is written, naming each difference (old -> new). Where the work runs
(executor, Ray address, resources per task) and permission flags change no number and may differ.
Each command reads and checks its own inputs (data, models, layers, methods) before it calls
``check_run_folder``: an input error is reported as such, whatever the folder holds, and leaves it as it was.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from ..store import canonical

WHERE_IT_RUNS = frozenset({"executor", "ray_address", "cpus_per_task", "gpus_per_task", "trust_pickle"})
ABSENT = "(not set)"


def as_stored(settings) -> dict:
    """``settings`` (a preset dataclass or a dict) as the store holds them: JSON values, tuples as lists."""
    values = asdict(settings) if not isinstance(settings, dict) else settings
    return json.loads(json.dumps(values, default=str))


def differences(old: dict, new: dict, free=WHERE_IT_RUNS, prefix: str = "") -> list[str]:
    """``"name: old -> new"`` for each setting outside ``free`` whose value differs, in name order; settings
    that are dicts on both sides (recipes, the adversary) are compared key by key (``recipe.lr: ...``)."""
    found = []
    for name in sorted((set(old) | set(new)) - set(free)):
        before, after = old.get(name, ABSENT), new.get(name, ABSENT)
        label = prefix + name.replace("_", "-")
        if isinstance(before, dict) and isinstance(after, dict):
            found += differences(before, after, (), label + ".")
        elif canonical({"v": before}) != canonical({"v": after}):
            found.append(f"{label}: {_short(before)} -> {_short(after)}")
    return found


def _short(value) -> str:
    """A setting's value as the message shows it: strings bare, None as "none", others as JSON, cut at 80."""
    text = value if isinstance(value, str) else "none" if value is None else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def stored_settings(out: Path) -> tuple[str, dict] | None:
    """(kind, settings) of the last run written to ``out/results.sqlite``; None for a new folder, or one
    where no result and no model was made yet (a run that stopped at a bad input, fixed by the rerun).
    Read without writing: the store's file is left byte for byte as it was."""
    path = Path(out) / "results.sqlite"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT row FROM results WHERE audit = 'settings' ORDER BY rowid").fetchall()
        made = db.execute("SELECT 1 FROM results WHERE audit NOT IN ('settings', 'inputs') LIMIT 1").fetchone()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"--out {out}: {path.name} is not a gradaudit results store ({err})") from None
    finally:
        db.close()
    if not rows or not (made or any((Path(out) / "models").glob("*.pt"))):
        return None
    last = json.loads(rows[-1][0])
    return last.get("preset", ""), last.get("settings", {})


def check_run_folder(out: str | Path, settings, kind: str | None = None) -> None:
    """Refuse (ValueError) to write ``settings`` into ``out`` when ``out`` holds a run made with settings
    that would change its stored numbers, or a run of another kind (``kind``: the settings' class name)."""
    out = Path(out)
    stored = stored_settings(out)
    if stored is None:
        return
    old_kind, old = stored
    kind = kind or type(settings).__name__
    if old_kind and old_kind != kind:
        raise ValueError(f"--out {out} holds a {old_kind} run; this is a {kind} run: use a new --out")
    changed = differences(old, as_stored(settings))
    if changed:
        raise ValueError(f"--out {out} holds results made with other settings ({'; '.join(changed)}); rerun with "
                         "the same settings to resume, or use a new --out")


def check_settings_file(folder: str | Path, settings: dict, flag: str) -> None:
    """The same rule for a folder of output files (``explain --out-dir``): ``folder/settings.json`` holds the
    settings that made its files; a rerun with others is refused (ValueError naming ``flag``), a first run
    writes it before any file."""
    folder = Path(folder)
    path = folder / "settings.json"
    new = as_stored(settings)
    if path.exists():
        changed = differences(json.loads(path.read_text(encoding="utf-8")), new)
        if changed:
            raise ValueError(f"{flag} {folder} holds files made with other settings ({'; '.join(changed)}); rerun "
                             f"with the same settings to resume, or use a new {flag}")
        return
    if folder.is_dir() and any(folder.glob("maps-*.pt")):
        raise ValueError(f"{flag} {folder} holds maps files but no settings.json to say what made them; "
                         f"use a new {flag}")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(new, indent=1, sort_keys=True), encoding="utf-8")
