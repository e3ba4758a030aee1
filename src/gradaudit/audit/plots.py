"""One plotter per audit and per side table the store holds (``diffroar_leak``, ``weight_saliency``):
DataFrame of its rows -> matplotlib figure. ``PLOTTERS`` maps each name to its plotter."""

from __future__ import annotations

from .common import CONTROLS
from .stats import mean_interval


def _axes(ax, ncols=1, width=4.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, [ax] * ncols
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 3.4), squeeze=False)
    return fig, list(axes[0])


def plot_diffroar(table, ax=None):
    """DiffROAR(k) per method with the spread over repeats, one panel per model."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = _axes(ax, len(models))
    for axis, model in zip(axes, models, strict=False):
        part = table[table["model"] == model].groupby(["method", "fraction"])["diffroar"]
        part = part.agg(["mean", "std"]).reset_index()
        for method, rows in part.groupby("method", sort=False):
            axis.errorbar(rows["fraction"], rows["mean"], yerr=rows["std"].fillna(0), marker="o", ms=3, capsize=2,
                          label=method)
        axis.axhline(0, color="grey", lw=0.8, ls="--")
        axis.set(title=f"DiffROAR - {model} model", xlabel="fraction of pixels kept (k)",
                 ylabel="acc(top-k) - acc(bottom-k)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _bars(table, value, title, ylabel, ax=None, reference=None):
    import numpy as np

    fig, axes = _axes(ax, 1, width=7)
    axis = axes[0]
    pivot = table.pivot_table(index="method", columns="model", values=value, sort=False)
    positions = np.arange(len(pivot.index))
    width = 0.8 / max(1, len(pivot.columns))
    for i, model in enumerate(pivot.columns):
        axis.bar(positions + i * width, pivot[model], width, label=model)
    if reference is not None:
        axis.axhline(reference, color="grey", lw=0.8, ls="--")
    axis.set_xticks(positions + width * (len(pivot.columns) - 1) / 2, pivot.index, rotation=20, fontsize=7)
    axis.set(title=title, ylabel=ylabel)
    axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_signal_mass(table, ax=None):
    return _bars(table, "signal_mass", "Share of |attribution| on the signal block", "signal mass", ax, reference=0.5)


def plot_class_sensitivity(table, ax=None):
    """Mean Spearman rank correlation of the top- and bottom-class maps per method (see ``sensitivity``)."""
    return _bars(table, "correlation", "Top vs bottom class maps (lower = more class-sensitive)", "Spearman r", ax)


def plot_randomization(table, ax=None):
    models = list(dict.fromkeys(table["model"]))
    fig, axes = _axes(ax, len(models))
    for axis, model in zip(axes, models, strict=False):
        part = table[table["model"] == model].groupby(["method", "depth"], sort=False)["spearman"].mean().reset_index()
        for method, rows in part.groupby("method", sort=False):
            axis.plot(rows["depth"], rows["spearman"], marker="o", ms=3, label=method)
        axis.set(title=f"Cascading randomization - {model}", xlabel="layers randomized (from the top)",
                 ylabel="Spearman r with trained maps", ylim=(-0.2, 1.05))
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_local_faithfulness(table, ax=None):
    """Methods x neighbourhoods matrix of unexplained variance per model; the best is boxed."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = _axes(ax, len(models), width=6)
    for axis, model in zip(axes, models, strict=False):
        part = table[table["model"] == model].pivot_table(index="method", columns="neighbourhood",
                                                          values="unexplained", aggfunc="mean", sort=False)
        shown = part.clip(upper=1.0)
        axis.imshow(shown.values, cmap="viridis_r", vmin=0, vmax=1, aspect="auto")
        axis.set_xticks(range(len(part.columns)), part.columns, rotation=30, fontsize=7)
        axis.set_yticks(range(len(part.index)), part.index, fontsize=7)
        for j, column in enumerate(part.columns):
            best = part[column].values.argmin()
            for i in range(len(part.index)):
                axis.text(j, i, f"{part.values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                          color="red" if i == best else "white")
        axis.set_title(f"Unexplained variance - {model} (red: best)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_activation_profiles(table, ax=None):
    """Normalised class profiles (classes x channels, channels ordered by their preferred class),
    one panel per model (the first of each name)."""
    import numpy as np

    table = table[table["profile"].notna()].drop_duplicates(["model", "class"])
    models = list(dict.fromkeys(table["model"]))
    fig, axes = _axes(ax, len(models))
    for axis, model in zip(axes, models, strict=False):
        part = table[table["model"] == model].sort_values("class")
        profiles = np.array(part["profile"].tolist())
        order = np.lexsort((-profiles.max(0), profiles.argmax(0)))
        image = axis.imshow(profiles[:, order], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        axis.set(title=f"activation profiles - {model}", xlabel="channel (by preferred class)", ylabel="class",
                 yticks=range(len(part)), yticklabels=part["class"].tolist())
    fig.colorbar(image, ax=axes, shrink=0.8, label="normalised mean activation")
    return fig


def _means_with_intervals(table, value, group, ax, title, ylabel):
    """Bars of ``value``'s mean per ``group`` value, one colour per scenario, with 95% intervals."""
    import numpy as np

    fig, axes = _axes(ax, 1, width=8)
    axis = axes[0]
    table = table[table[value].notna()]
    labels = list(dict.fromkeys(table[group]))
    scenarios = list(dict.fromkeys(table["scenario"]))
    width = 0.8 / max(1, len(scenarios))
    for i, scenario in enumerate(scenarios):
        part = table[table["scenario"] == scenario]
        found = [mean_interval(part[part[group] == label][value].astype(float).tolist())
                 if (part[group] == label).any() else None for label in labels]
        means = [f.mean if f else np.nan for f in found]
        errors = [f.half_width if f and np.isfinite(f.half_width) else 0 for f in found]
        axis.bar(np.arange(len(labels)) + i * width, means, width, yerr=errors, capsize=2, label=scenario)
    axis.set_xticks(np.arange(len(labels)) + width * (len(scenarios) - 1) / 2, labels, rotation=25, fontsize=7,
                    ha="right")
    axis.set(title=title, ylabel=ylabel)
    axis.legend(fontsize=7, title="forgetting")
    fig.tight_layout()
    return fig


def plot_unlearning(table, ax=None):
    """Average gap to Retrain per method and scenario (lower = closer to retraining), 95% intervals over seeds."""
    return _means_with_intervals(table[table["method"] != "Retrain"], "gap", "method", ax,
                                 "Average gap to Retrain over UA, RA, TA, MIA (95% intervals over seeds)", "gap")


def plot_weight_saliency(table, ax=None):
    """Share of each parameter tensor in the SalUn mask per scenario, 95% intervals over seeds."""
    return _means_with_intervals(table, "salient_share", "parameter", ax,
                                 "Share of salient weights per parameter tensor", "share in the mask")


def _summarised(table, keys: list[str], value: str):
    """Mean of ``value`` per group of ``keys`` with its 95% interval, as a DataFrame of ``keys``, ``mean``,
    ``low``, ``high``. A group of one row keeps the interval it stores (``value_low``/``value_high``, over
    its images); several rows (model seeds, repeats) get an interval over the rows. Where there is no
    finite interval (one value), low = high = mean."""
    import math

    import pandas as pd

    out = []
    for key, part in table.groupby(keys, sort=False):
        if len(part) == 1 and f"{value}_low" in part:
            row = part.iloc[0]
            mean, low, high = (math.nan if row[c] is None else float(row[c])
                               for c in (value, f"{value}_low", f"{value}_high"))
        else:
            interval = mean_interval(part[value].astype(float).tolist())
            mean, low, high = interval.mean, interval.low, interval.high
        finite = math.isfinite(low) and math.isfinite(high)
        out.append({**dict(zip(keys, key, strict=True)), "mean": mean, "low": low if finite else mean,
                    "high": high if finite else mean})
    return pd.DataFrame(out)


def _curves(table, series, title: str, xlabel: str, ylabel: str, ax=None):
    """One panel per model; per method (one colour) a curve of each ``series`` entry (column, label,
    line style) against ``fraction``, with its 95% interval shaded (see ``_summarised``)."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = _axes(ax, len(models))
    for axis, model in zip(axes, models, strict=False):
        part = table[table["model"] == model]
        for i, method in enumerate(dict.fromkeys(part["method"])):
            rows = part[part["method"] == method]
            colour = f"C{i % 10}"
            for column, label, style in series:
                curve = _summarised(rows, ["fraction"], column).sort_values("fraction")
                axis.plot(curve["fraction"], curve["mean"], style, marker="o", ms=3, color=colour,
                          label=f"{method} {label}")
                axis.fill_between(curve["fraction"], curve["low"].clip(0, 1), curve["high"].clip(0, 1),
                                  color=colour, alpha=0.15, lw=0)
        axis.set(title=f"{title} - {model}", xlabel=xlabel, ylabel=ylabel, ylim=(-0.02, 1.02))
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_road(table, ax=None):
    """ROAD: accuracy with the most (MoRF, solid) and least (LeRF, dashed) relevant pixels imputed away,
    per method, with 95% intervals. A faithful method's MoRF curve falls well below its LeRF curve."""
    return _curves(table, (("morf_accuracy", "MoRF", "-"), ("lerf_accuracy", "LeRF", "--")), "ROAD",
                   "fraction of pixels imputed away", "accuracy", ax)


def plot_diffroar_leak(table, ax=None):
    """DiffROAR's leak check: accuracy of a model that sees only the top-k (solid) or bottom-k (dashed)
    keep-mask. Far above chance: the mask's shape alone tells the class (a constant fill leaks it)."""
    return _curves(table, (("top_mask_accuracy", "top-k mask", "-"), ("bottom_mask_accuracy", "bottom-k mask", "--")),
                   "Mask leak", "fraction of pixels kept (k)", "accuracy from the mask alone", ax)


def _interval_bars(axis, table, value: str, title: str, ylabel: str, reference: float | None = None) -> None:
    """Bars of ``value`` per method (x) and model (colour) on ``axis``, with 95% interval whiskers."""
    import numpy as np

    summary = _summarised(table, ["method", "model"], value)
    methods = list(dict.fromkeys(summary["method"]))
    models = list(dict.fromkeys(summary["model"]))
    positions = np.arange(len(methods))
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        part = summary[summary["model"] == model].set_index("method").reindex(methods)
        error = np.stack([(part["mean"] - part["low"]).fillna(0), (part["high"] - part["mean"]).fillna(0)])
        axis.bar(positions + i * width, part["mean"], width, yerr=error, capsize=2, label=model)
    if reference is not None:
        axis.axhline(reference, color="grey", lw=0.8, ls="--")
    axis.set_xticks(positions + width * (len(models) - 1) / 2, methods, rotation=20, fontsize=7)
    axis.set(title=title, ylabel=ylabel)
    axis.legend(fontsize=7)


def plot_signal_coordinate(table, ax=None):
    """The synthetic signal coordinate, per method and model with 95% intervals: ``quality`` = P[top
    |attribution| on the signal] - P[bottom on it] (+1 ideal, below 0 feature inversion), and the mean
    |cos(x, attribution)| (near 1: the attribution points along x). A given ``ax`` gets the quality panel alone."""
    fig, axes = _axes(ax, 2 if ax is None else 1)
    _interval_bars(axes[0], table, "quality", "Attribution quality at level 1", "p_top - p_bottom", reference=0)
    if ax is None:
        _interval_bars(axes[1], table, "abs_cos", "Alignment with the input", "|cos(x, attribution)|")
    fig.tight_layout()
    return fig


def _grid(rows: int, cols: int, width: float = 2.4, height: float = 2.2):
    """A figure of ``rows`` x ``cols`` small panels sharing their axes ([rows][cols] of axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 0.6, height * rows + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    return fig, axes


def plot_insertion_deletion(table, ax=None):
    """Small multiples of RISE's curves, mean over images (and over rows of the same model and method): one panel
    per method (a row of panels per model), insertion solid and deletion dashed, the controls (``CONTROLS``) in
    grey in every panel; each title gives the method's mean AUCs. A faithful map rises fast under insertion and
    falls fast under deletion, away from the grey curves of maps blind to the model. A given ``ax`` gets all
    the curves of the first model in one panel."""
    import numpy as np

    table = table if "model" in table.columns else table.assign(model="model")
    models = list(dict.fromkeys(table["model"]))
    names = list(dict.fromkeys(table["method"]))
    methods = [m for m in names if m not in CONTROLS] or names
    controls = [m for m in names if m in CONTROLS and m not in methods]
    if ax is None:
        fig, axes = _grid(len(models), len(methods))
    else:
        fig, axes = ax.figure, [[ax] * len(methods)]
        models = models[:1]

    def draw(axis, rows, colour, label):
        fractions = rows["fractions"].iloc[0]
        for column, style in (("insertion", "-"), ("deletion", "--")):
            curve = np.mean(np.array(rows[f"{column}_curve"].tolist(), dtype=float), axis=0)
            axis.plot(fractions, curve, style, color=colour, lw=1.5 if colour != "grey" else 1, label=label[column])

    for row_axes, model in zip(axes, models, strict=False):
        part = table[table["model"] == model]
        for axis, method in zip(row_axes, methods, strict=False):
            for control, shade in zip(controls, ("0.55", "0.75", "0.35"), strict=False):
                draw(axis, part[part["method"] == control], shade,
                     {c: f"{control} {c}" for c in ("insertion", "deletion")})
            rows = part[part["method"] == method]
            if rows.empty:
                continue
            draw(axis, rows, "C0", {c: f"{method} {c}" for c in ("insertion", "deletion")})
            aucs = ", ".join(f"{c[:3]}. {rows[c].astype(float).mean():.2f}" for c in ("insertion", "deletion"))
            axis.set_title(f"{method}\n{aucs}" + (f" ({model})" if len(models) > 1 else ""), fontsize=7)
    for axis in (a for row_axes in axes for a in row_axes):
        axis.tick_params(labelsize=6)
    for axis in axes[-1]:
        axis.set_xlabel("fraction of pixels moved", fontsize=7)
    for row_axes in axes:
        row_axes[0].set_ylabel("score", fontsize=7)
    if controls:
        axes[0][-1].legend(fontsize=5, loc="best")
    fig.suptitle("Insertion (solid) / deletion (dashed); controls in grey", fontsize=8)
    fig.tight_layout()
    return fig


def _metric_bars(value: str, title: str, ylabel: str):
    """A plotter of ``value`` per method and model as bars with 95% interval whiskers."""
    def plot(table, ax=None):
        fig, axes = _axes(ax, 1, width=7)
        _interval_bars(axes[0], table, value, title, ylabel)
        fig.tight_layout()
        return fig

    plot.__doc__ = f"{title}: {ylabel} per method and model, with 95% intervals."
    return plot


plot_pointing_game = _metric_bars("accuracy", "Pointing game", "accuracy (mean over classes)")
plot_relevance_mass = _metric_bars("relevance_mass", "Relevance mass accuracy", "share of relevance in the mask")
plot_infidelity = _metric_bars("infidelity", "Infidelity (lower = more faithful)", "mean squared error")
plot_relevance_rank = _metric_bars("relevance_rank", "Relevance rank accuracy", "share of top-K pixels in the mask")
plot_sensitivity_max = _metric_bars("sensitivity_max", "Max-sensitivity (lower = more stable)",
                                    "largest relative change of the map")
plot_faithfulness_correlation = _metric_bars("faithfulness_correlation", "Faithfulness correlation",
                                             "Pearson r of subset attribution and output drop")
plot_monotonicity = _metric_bars("monotonicity", "Monotonicity", "share of monotone steps")

plot_sparseness = _metric_bars("sparseness", "Sparseness (higher = sparser)", "Gini index of |map|")
plot_complexity = _metric_bars("complexity", "Complexity (lower = simpler)", "entropy of |map| (nats)")
plot_completeness = _metric_bars("completeness", "Completeness (lower = better)",
                                 "|sum of attributions - output change|")
plot_input_invariance = _metric_bars("input_invariance", "Input invariance (higher = better)",
                                     "share of images unchanged by the shift")
plot_local_lipschitz = _metric_bars("local_lipschitz", "Local Lipschitz estimate (lower = more stable)",
                                    "max ||a - a'|| / ||x - x'||")
plot_relative_input_stability = _metric_bars("relative_input_stability",
                                             "Relative input stability (lower = more stable)",
                                             "max relative change of map / of input")
plot_region_perturbation = _metric_bars("aopc", "Region perturbation, MoRF (higher = more faithful)", "AOPC")
plot_irof = _metric_bars("irof", "IROF (higher = more faithful)", "area over the curve")
plot_smprt = _metric_bars("smprt", "Smooth MPRT (lower = better)", "Spearman r, trained vs random model")
plot_emprt = _metric_bars("emprt", "Efficient MPRT (higher = better)", "relative rise of the map's entropy")
plot_random_logit = _metric_bars("random_logit", "Random logit (lower = better)", "SSIM, own vs random class")


def plot_mprt(table, ax=None):
    """MPRT step by step: per method, the mean Spearman r of its map with the trained model's after each step of
    the cascade (``spearman_by_layer``, mean over rows), drawn as ``plot_randomization`` draws its depths."""
    import pandas as pd

    depths = pd.DataFrame([{"model": row.model, "method": row.method, "depth": depth, "spearman": r}
                           for row in table.itertuples() for depth, r in enumerate(row.spearman_by_layer, 1)])
    fig = plot_randomization(depths, ax)
    sides = "/".join({"top_down": "from the top", "bottom_up": "from the bottom"}.get(o, str(o))
                     for o in dict.fromkeys(table["order"]))
    for axis in fig.axes if ax is None else [ax]:
        axis.set_xlabel(f"layers randomized ({sides})")
    return fig


plot_lds = _metric_bars("lds", "Linear datamodeling score (random scores: 0)",
                        "Spearman r over retrained subsets")
plot_brittleness = _metric_bars("smallest_k", "Brittleness (lower = better)",
                                "top proponents removed to flip a correct prediction")


def plot_loo_correlation(table, ax=None):
    """Leave-one-out retraining of a convex model: Pearson and Spearman r of score / N with the actual change of
    the query's loss, per strategy with 95% intervals over queries (a given ``ax`` gets the Pearson panel)."""
    fig, axes = _axes(ax, 2)
    for axis, value, label in zip(axes, ("pearson", "spearman"), ("Pearson r", "Spearman r"), strict=False):
        _interval_bars(axis, table, value, f"Leave-one-out: {label}", label)
    fig.tight_layout()
    return fig


def plot_mislabel_detection(table, ax=None):
    """Share of flipped labels found in the top 10% / 20% of self-influence per strategy, 95% intervals; the
    dashed line is the random rate of the top 10%."""
    fig, axes = _axes(ax, 2)
    for axis, share in zip(axes, (10, 20), strict=False):
        _interval_bars(axis, table, f"found_{share}", f"Flips found in the top {share}%", "share of flipped labels",
                       reference=share / 100)
    fig.tight_layout()
    return fig


TRUST_COLOURS = {"trusted": "tab:green", "tentative": "gold", "weak": "tab:orange", "flagged": "tab:red",
                 "reported": "tab:blue"}


def plot_metric_audit(table, ax=None):
    """The metric audit in one picture per model: a grid of metrics (rows) x methods (columns, controls last)
    holding each method's rank under the metric (1 = best; the mean rank over rows of the same model and metric),
    the row's label giving the verdict and Krippendorff's alpha, and a bar at its left coloured by the verdict
    (``TRUST_COLOURS``: green trusted, yellow tentative, orange weak, red flagged, blue reported)."""
    import numpy as np
    from matplotlib.patches import Rectangle

    table = table if "model" in table.columns else table.assign(model="model")
    models = list(dict.fromkeys(table["model"]))
    names = list(dict.fromkeys(m for ranking in table["ranking"] for m in ranking))
    names = [m for m in names if m not in CONTROLS] + [m for m in names if m in CONTROLS]
    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = _axes(ax, len(models), width=max(4.5, 0.55 * len(names) + 3.2))
    if ax is None:
        fig.set_figheight(max(2.6, 0.32 * len(metrics) + 1.4))
    for axis, model in zip(axes, models, strict=False):
        part = table[table["model"] == model]
        ranks = np.full((len(metrics), len(names)), np.nan)
        labels = []
        for i, metric in enumerate(metrics):
            rows = part[part["metric"] == metric]
            if rows.empty:
                labels.append(metric)
                continue
            for j, name in enumerate(names):
                found = [r.index(name) + 1 for r in rows["ranking"] if name in r]
                ranks[i, j] = np.mean(found) if found else np.nan
            verdict = "/".join(dict.fromkeys(rows["trust"]))
            labels.append(f"{metric}: {verdict}, α {rows['alpha'].astype(float).mean():.2f}")
            axis.add_patch(Rectangle((-0.95, i - 0.45), 0.4, 0.9, color=TRUST_COLOURS.get(rows["trust"].iloc[0],
                                                                                              "tab:grey"),
                                     clip_on=False))
        axis.imshow(ranks, cmap="viridis_r", aspect="auto", vmin=1, vmax=len(names))
        for (i, j), rank in np.ndenumerate(ranks):
            if np.isfinite(rank):
                axis.text(j, i, f"{rank:.0f}" if rank == round(rank) else f"{rank:.1f}", ha="center", va="center",
                          fontsize=7, color="black" if rank <= len(names) / 2 else "white")
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        axis.set_yticks(range(len(metrics)), labels, fontsize=7)
        axis.set_xlim(-1, len(names) - 0.5)
        axis.set_title(f"The metrics, audited ({model}): rank of each method, 1 = best", fontsize=8)
    fig.tight_layout()
    return fig


PLOTTERS = {
    "unlearning": plot_unlearning, "weight_saliency": plot_weight_saliency,
    "diffroar": plot_diffroar, "signal_mass": plot_signal_mass,
    "class_sensitivity": plot_class_sensitivity, "randomization": plot_randomization,
    "local_faithfulness": plot_local_faithfulness, "activation_profiles": plot_activation_profiles,
    "road": plot_road, "diffroar_leak": plot_diffroar_leak, "signal_coordinate": plot_signal_coordinate,
    "insertion_deletion": plot_insertion_deletion, "pointing_game": plot_pointing_game,
    "relevance_mass": plot_relevance_mass, "relevance_rank": plot_relevance_rank, "infidelity": plot_infidelity,
    "sensitivity_max": plot_sensitivity_max, "faithfulness_correlation": plot_faithfulness_correlation,
    "monotonicity": plot_monotonicity, "metric_audit": plot_metric_audit,
    "loo_correlation": plot_loo_correlation, "lds": plot_lds, "mislabel_detection": plot_mislabel_detection,
    "brittleness": plot_brittleness, "sparseness": plot_sparseness, "complexity": plot_complexity,
    "completeness": plot_completeness, "input_invariance": plot_input_invariance,
    "local_lipschitz": plot_local_lipschitz, "relative_input_stability": plot_relative_input_stability,
    "region_perturbation": plot_region_perturbation, "irof": plot_irof, "mprt": plot_mprt, "smprt": plot_smprt,
    "emprt": plot_emprt, "random_logit": plot_random_logit,
}
