"""The self-contained HTML report of a run, rebuilt from its store and saved figures."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from ..audit.plots import PLOTTERS
from ..audit.stats import Interval, mean_interval
from ..audit.unlearning import with_gaps
from ..store import Store
from .figures import NOTES_KEY
from .reading import kind, reading

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradaudit report: {{ name }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .reading li { margin: 0.3em 0; } code { background: #f3f3f3; }
.example { display: inline-block; text-align: center; font-size: 0.8em; margin: 0 0.3em; }
.example img { image-rendering: pixelated; }
</style></head><body>
<h1>gradaudit report: {{ name }}</h1>
<p>Every number in the tables is a mean with its 95% interval over the rows named in the last column
(model seeds, retraining repeats; a single row shows its own interval over images); verdicts compare the
audited models' seeds.</p>
{% if inputs %}<h2>Data and models</h2><ul>{% for what, description in inputs %}<li>{{ what }}: {{ description }}</li>
{% endfor %}</ul>{% endif %}
<h2>Reading</h2><ul class="reading">{% for line in lines %}<li>{{ line }}</li>{% endfor %}</ul>
{% for figure in heatmaps %}<h2>{{ figure.title }}</h2>
<img alt="{{ figure.title }}" src="data:image/png;base64,{{ figure.data }}">
{% if figure.notes %}<ul class="notes">{% for note in figure.notes %}<li>{{ note }}</li>{% endfor %}</ul>{% endif %}
{% endfor %}
{% if influence %}<h2>{{ influence.title }}</h2><p>{{ influence.sign }}</p>
<table>{% for query in influence.queries %}<tr><td><span class="example"><img alt="query {{ query.query }}" \
src="data:image/png;base64,{{ query.image }}"><br>{{ query.caption }}</span></td>
{% for side in ("proponents", "opponents") %}<td>{{ side }}:<br>{% for example in query[side] %}<span class="example">\
<img alt="training example {{ example.index }}" src="data:image/png;base64,{{ example.image }}"><br>\
#{{ example.index }} {{ example.label_name }}<br>{{ example.score }}</span>{% endfor %}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
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
    "insertion_deletion": "Insertion / deletion (RISE): area under the score curve as pixels are inserted "
                          "into a blurred image / deleted to zero, no retraining",
    "pointing_game": "Pointing game: share of maps whose maximum lies within the tolerance of the mask "
                     "(mean over classes)",
    "relevance_mass": "Relevance mass accuracy: share of positive relevance inside the mask",
    "relevance_rank": "Relevance rank accuracy: share of the top-K pixels inside the mask (K = mask size)",
    "infidelity": "Infidelity: squared error of the attributions' prediction of the output drop under "
                  "perturbations (lower = more faithful)",
    "sensitivity_max": "Max-sensitivity: largest relative change of the map under small input perturbations "
                       "(lower = more stable)",
    "faithfulness_correlation": "Faithfulness correlation: Pearson correlation of the attribution in random "
                                "subsets with the output drop when they are removed",
    "monotonicity": "Monotonicity: does the class probability rise as features are inserted in order of attribution",
    "sparseness": "Sparseness: Gini index of |attribution| (higher = sparser)",
    "complexity": "Complexity: entropy of |attribution| as a distribution over pixels (lower = less complex)",
    "mprt": "MPRT: Spearman r of each map with the map once the cascade has re-initialised every layer (lower = "
            "the map follows the model)",
    "smprt": "Smooth MPRT: as MPRT, on maps averaged over noisy copies of the input (lower = better)",
    "emprt": "Efficient MPRT: relative rise of the map's histogram entropy once every layer is random (higher = "
             "better)",
    "random_logit": "Random logit: SSIM of the maps for the class and for a random other class (lower = better)",
    "completeness": "Completeness: |sum of attributions - (f(x) - f(baseline))| in logits (lower = more complete)",
    "input_invariance": "Input invariance: share of images whose map is unchanged when the first layer's bias "
                        "absorbs a constant shift of the input",
    "local_lipschitz": "Local Lipschitz estimate: largest change of the map per change of the input in a small "
                       "ball (lower = more stable)",
    "relative_input_stability": "Relative input stability: largest relative change of the map per relative "
                                "change of the input, prediction kept (lower = more stable)",
    "irof": "IROF: area over the class-probability curve as segments are removed by mean relevance (higher = "
            "more faithful)",
    "region_perturbation": "Region perturbation: AOPC, the mean drop of the class probability as patches are "
                           "replaced by relevance (higher = more faithful)",
    "metric_audit": "The metrics, audited: separation from the controls (Random, Sobel), Krippendorff's alpha of "
                    "the methods' ranking across images (reliable when its interval is at or above 0.8, tentative "
                    "at or above 0.667), and the verdict",
    "models": "Audited models: test accuracy (clean / under the PGD attack they were audited with)",
    "signal_coordinate": "Ground truth: synthetic signal coordinate (attribution quality at level 1)",
    "signal_mass": "Ground truth: attribution on the signal block (BlockMNIST; -top: BlockMNIST-Top)",
    "diffroar": "DiffROAR: retrain on top-k vs bottom-k pixels",
    "diffroar_leak": "Leak check: accuracy of a model that sees only the keep-mask",
    "road": "ROAD: accuracy with the most (MoRF) / least (LeRF) relevant pixels imputed away, no retraining",
    "class_sensitivity": "Class sensitivity (Spearman r of top- vs bottom-class maps; +meta: after the meta step)",
    "randomization": "Sanity check: cascading model randomization",
    "local_faithfulness": "Local faithfulness: which method's linear model fits which neighbourhood",
    "unlearning": "Unlearning: UA = 1 - forget accuracy, RA retain, TA test accuracy, MIA-efficacy (share of the "
                  "forget set judged non-members), seconds, and the average gap to Retrain over UA, RA, TA, MIA",
    "weight_saliency": "Weight saliency: share of each parameter tensor's weights in SalUn's mask",
    "loo_correlation": "Leave-one-out retraining of a convex model (Koh & Liang): Pearson / Spearman r of score / N "
                       "with the actual change of each query's loss, and the slope (1 = the right scale)",
    "lds": "Linear datamodeling score (TRAK's protocol): Spearman r over models retrained on random subsets "
           "between the summed scores of each subset and the query's margin log(p / (1 - p)) (random scores: 0)",
    "brittleness": "Brittleness: smallest number of top proponents whose removal (and retraining) flips a correct "
                   "prediction (smaller = better; not flipped within the grid counts as twice its largest k), "
                   "and the share of queries flipped",
    "mislabel_detection": "Mislabel detection: share of flipped labels found in the top 10% / 20% of "
                          "self-influence (random rate 10% / 20%)",
    "activation_profiles": "Neuron activation profiles: each channel's mean activation per class, normalised "
                           "across classes; nearest class and the RMS distance between the two profiles",
}
SHARES = {"saturated"}  # True/False columns, shown as the share of rows
# audit -> (group keys, value columns); "kind" is the model name without its seed.
SUMMARY = {
    "insertion_deletion": (["kind", "method"], ["insertion", "deletion", "difference"]),
    "pointing_game": (["kind", "method"], ["accuracy", "hit_rate"]),
    "relevance_mass": (["kind", "method"], ["relevance_mass"]),
    "relevance_rank": (["kind", "method"], ["relevance_rank"]),
    "infidelity": (["kind", "method"], ["infidelity"]),
    "sensitivity_max": (["kind", "method"], ["sensitivity_max"]),
    "faithfulness_correlation": (["kind", "method"], ["faithfulness_correlation"]),
    "monotonicity": (["kind", "method"], ["monotonicity"]),
    **{audit: (["kind", "method"], [audit]) for audit in (
        "sparseness", "complexity", "mprt", "smprt", "emprt", "random_logit", "completeness", "input_invariance",
        "local_lipschitz", "relative_input_stability", "irof")},
    "region_perturbation": (["kind", "method"], ["aopc"]),
    "metric_audit": (["kind", "metric", "trust"], ["alpha"]),
    "models": (["kind"], ["clean", "adversarial"]),
    "signal_coordinate": (["kind", "method"], ["p_top", "p_bottom", "quality", "abs_cos"]),
    "signal_mass": (["kind", "method"], ["signal_mass", "top_in_signal"]),
    "diffroar": (["kind", "method", "fraction"], ["top_accuracy", "bottom_accuracy", "diffroar", "saturated",
                                                 "tied_share"]),
    "diffroar_leak": (["kind", "method", "fraction"], ["top_mask_accuracy", "bottom_mask_accuracy"]),
    "road": (["kind", "method", "fraction"], ["morf_accuracy", "lerf_accuracy", "gap"]),
    "class_sensitivity": (["kind", "method"], ["correlation"]),
    "randomization": (["kind", "method", "randomized"], ["spearman"]),
    "local_faithfulness": (["kind", "neighbourhood", "method"], ["unexplained"]),
    "activation_profiles": (["kind", "layer", "class"], ["examples", "nearest_distance"]),
    "unlearning": (["scenario", "method"], ["UA", "RA", "TA", "MIA", "gap", "seconds"]),
    "weight_saliency": (["scenario", "parameter"], ["weights", "salient_share"]),
    "loo_correlation": (["kind", "method"], ["pearson", "spearman", "slope"]),
    "lds": (["kind", "method"], ["lds"]),
    "brittleness": (["kind", "method"], ["smallest_k", "flipped"]),
    "mislabel_detection": (["kind", "method"], ["found_10", "found_20"]),
}
SIGN = ("A positive score (proponent) means the training example helps this prediction: upweighting it lowers the "
        "query's loss, and removing it would raise the loss by about score / N (N = {n} training examples; scores "
        "are not divided by N). A negative score (opponent) means it works against it: removing it would lower the "
        "query's loss. The checks below say how far these estimates predict retraining.")


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(part, column: str) -> str:
    """Mean with its 95% interval over the group's rows (a share for True/False columns); a single
    row shows the interval it stores (over its images or examples), if any."""
    if len(part) == 1 and f"{column}_low" in part:
        row = part.iloc[0]
        return Interval(row[column], row[f"{column}_low"], row[f"{column}_high"], int(row[f"{column}_n"])).text()
    values = [float(v) for v in part[column].tolist() if v is not None]
    if not values:
        return ""
    if column in SHARES:
        return f"{sum(values) / len(values):.0%}"
    interval = mean_interval(values)
    return f"{interval.mean:.3f}" if interval.n < 2 or interval.low == interval.high else interval.text()


def _section(audit: str, rows: list[dict]) -> dict:
    import pandas as pd

    table = pd.DataFrame(with_gaps(rows) if audit == "unlearning" else rows)
    table["kind"] = table["model"].map(kind)
    keys, values = SUMMARY[audit]
    values = [v for v in values if v in table.columns]
    groups = table.groupby(keys, sort=False)
    cells = [[str(k) for k in (key if isinstance(key, tuple) else (key,))]
             + [_cell(part, v) for v in values] + [str(len(part))] for key, part in groups]
    image = _png(PLOTTERS[audit](table.assign(model=table["kind"]))) if audit in PLOTTERS else None
    return {"title": TITLES[audit], "image": image, "columns": keys + values + ["rows"], "rows": cells}


def _influence(rows: list[dict]) -> dict | None:
    """Each query's image beside its top proponents and opponents (the job's "influence_top" rows), captioned."""
    if not rows:
        return None
    queries = []
    for row in sorted(rows, key=lambda r: r["query"]):
        examples = {side: [{**e, "score": f"{e['score']:+.3g}"} for e in row[side]]
                    for side in ("proponents", "opponents")}
        caption = (f"query {row['query']}: label {row['label_name']}, predicted {row['predicted_name']}, "
                   f"loss {row['loss']:.3f}")
        queries.append({"query": row["query"], "image": row["image"], "caption": caption, **examples})
    return {"title": f"Which training examples made each prediction ({rows[0]['strategy']} influence)",
            "sign": SIGN.format(n=rows[0]["train_examples"]), "queries": queries}


def _figure_notes(path: Path) -> list[str]:
    """The notes ``method_grid`` kept in a saved figure's PNG text (e.g. which maps are all zero), one per line."""
    from PIL import Image

    with Image.open(path) as image:
        return [line for line in image.text.get(NOTES_KEY, "").splitlines() if line]


def write_report(run: str | Path) -> Path:
    """Rebuild ``RUN/report.html`` from ``RUN/results.sqlite`` and ``RUN/figures/*.png``."""
    from jinja2 import Environment

    run = Path(run)
    if not (run / "results.sqlite").exists():
        raise FileNotFoundError(f"{run} has no results.sqlite; run `gradaudit audit --out {run}` first")
    store = Store(run / "results.sqlite")
    try:
        results = {audit: store.rows(audit) for audit in store.audits()}
        settings = store.rows("settings")
    finally:
        store.close()
    heatmaps = [{"title": f"Maps: {p.stem.replace('-', ' ')}", "data": base64.b64encode(p.read_bytes()).decode("ascii"),
                 "notes": _figure_notes(p)} for p in sorted((run / "figures").glob("*.png"))]
    page = Environment(autoescape=True).from_string(TEMPLATE).render(
        name=run.name, lines=reading(results), influence=_influence(results.get("influence_top")),
        inputs=[(r["what"], r["description"]) for r in results.get("inputs", [])],
        heatmaps=heatmaps, sections=[_section(a, results[a]) for a in SUMMARY if results.get(a)],
        settings=json.dumps(settings[-1] if settings else {}, indent=2),
    )
    path = run / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
