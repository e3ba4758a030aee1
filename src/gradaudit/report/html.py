"""The self-contained HTML report of a run, rebuilt from its store and saved figures."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from ..store import Store
from .plots import PLOTTERS
from .reading import reading

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradaudit report: {{ name }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .reading li { margin: 0.3em 0; } code { background: #f3f3f3; }
</style></head><body>
<h1>gradaudit report: {{ name }}</h1>
<h2>Reading</h2><ul class="reading">{% for line in lines %}<li>{{ line }}</li>{% endfor %}</ul>
{% for figure in heatmaps %}<h2>{{ figure.title }}</h2><img alt="{{ figure.title }}" src="data:image/png;base64,{{ figure.data }}">{% endfor %}
{% for section in sections %}
<h2>{{ section.title }}</h2>
{% if section.image %}<img alt="{{ section.title }}" src="data:image/png;base64,{{ section.image }}">{% endif %}
<table><tr>{% for column in section.columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for row in section.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}
<h2>Settings</h2><pre>{{ settings }}</pre>
</body></html>
"""

TITLES = {
    "signal_mass": "Ground truth: attribution on the signal block (BlockMNIST)",
    "diffroar": "DiffROAR: retrain on top-k vs bottom-k pixels",
    "class_sensitivity": "Class sensitivity",
    "randomization": "Sanity check: cascading model randomization",
    "local_faithfulness": "Local faithfulness: which method's linear model fits which neighbourhood",
}
SUMMARY = {
    "signal_mass": (["model", "method"], ["signal_mass", "top_in_signal"]),
    "diffroar": (["model", "method", "fraction"], ["top_accuracy", "bottom_accuracy", "diffroar"]),
    "class_sensitivity": (["model", "method"], ["correlation"]),
    "randomization": (["model", "method", "randomized"], ["spearman"]),
    "local_faithfulness": (["model", "neighbourhood", "method"], ["unexplained"]),
}


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _section(audit: str, rows: list[dict]) -> dict:
    import pandas as pd

    table = pd.DataFrame(rows)
    keys, values = SUMMARY[audit]
    summary = table.groupby(keys, sort=False)[values].agg(["mean", "std"]) if audit == "diffroar" else table.groupby(keys, sort=False)[values].mean()
    summary = summary.reset_index()
    columns = [" ".join(str(p) for p in c if p) if isinstance(c, tuple) else str(c) for c in summary.columns]
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in summary.itertuples(index=False)]
    return {"title": TITLES[audit], "image": _png(PLOTTERS[audit](table)), "columns": columns, "rows": cells}


def write_report(run: str | Path) -> Path:
    """Rebuild ``RUN/report.html`` from ``RUN/results.sqlite`` and ``RUN/figures/*.png``."""
    from jinja2 import Environment

    run = Path(run)
    if not (run / "results.sqlite").exists():
        raise FileNotFoundError(f"{run} has no results.sqlite; run `gradaudit audit --out {run}` first")
    store = Store(run / "results.sqlite")
    try:
        results = {audit: store.rows(audit) for audit in store.audits() if audit in PLOTTERS}
        settings = store.rows("settings")
    finally:
        store.close()
    heatmaps = [{"title": f"Maps: {p.stem.replace('-', ' ')}", "data": base64.b64encode(p.read_bytes()).decode("ascii")}
                for p in sorted((run / "figures").glob("*.png"))]
    page = Environment(autoescape=True).from_string(TEMPLATE).render(
        name=run.name, lines=reading(results),
        heatmaps=heatmaps, sections=[_section(a, rows) for a, rows in results.items() if rows],
        settings=json.dumps(settings[-1] if settings else {}, indent=2),
    )
    path = run / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
