"""The result in words: the paper's comparisons, each with its interval and a verdict that
follows the interval ("above", "below", "not distinguishable with n = ...").

Model names are ``KIND/SEED`` (``standard/0``, ``robust-top/2``); a comparison of training
regimes takes each audited model's mean as one unit, so its interval covers the spread over
the audited models' own seeds as well as (averaged) retraining seeds or images.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..audit.influence_checks import verdicts
from ..audit.stats import Interval, difference_interval, mean_interval, verdict
from ..audit.unlearning import with_gaps

SMALL_K = 0.1  # "small k": the levels at or below 10 % of pixels kept


@dataclass(frozen=True)
class Claim:
    """One comparison: a stable ``key``, its ``word`` (the verdict), the interval and the sentence."""

    key: str
    word: str
    interval: Interval
    sentence: str


def kind(model: str) -> str:
    """``standard/2`` -> ``standard``."""
    return str(model).split("/")[0]


def _per_model(rows: list[dict], value: str, **match) -> dict[str, float]:
    """Mean of ``value`` per model name over the rows matching ``match`` (kind= matches KIND)."""
    wanted_kind = match.pop("kind", None)
    groups: dict[str, list[float]] = {}
    for r in rows:
        if wanted_kind is not None and kind(r.get("model")) != wanted_kind:
            continue
        if all(r.get(k) == v for k, v in match.items()) and r.get(value) is not None:
            groups.setdefault(r["model"], []).append(r[value])
    return {m: sum(v) / len(v) for m, v in groups.items()}


def _compare(key: str, label: str, a: dict, b: dict, names: tuple[str, str], unit: str) -> Claim | None:
    if not a or not b:
        return None
    diff = difference_interval(list(a.values()), list(b.values()))
    word = verdict(diff)
    sentence = (f"{label}: {names[0]} {mean_interval(list(a.values())).text()} vs {names[1]} "
                f"{mean_interval(list(b.values())).text()}; difference {diff.text(signed=True)} over "
                f"{len(a)} vs {len(b)} {unit}: {names[0]} is {word}.")
    if min(len(a), len(b)) < 2 and unit == "model seeds":
        sentence += (" With one model on a side, a difference between models cannot be told from seed-to-seed "
                     "variation: audit several seeds of each (--models KIND/0=...,KIND/1=...).")
    return Claim(key, word, diff, sentence)


def _single_model_vs_random(roar: list[dict], method: str, label: str) -> list[Claim | None]:
    """For each model that is alone of its kind (the user's own models): ``method`` vs Random over
    that model's DiffROAR cells (levels x retraining repeats), so the interval covers retraining only."""
    models = list(dict.fromkeys(r["model"] for r in roar))
    kinds = [kind(m) for m in models]
    out = []
    for model in models:
        if kinds.count(kind(model)) != 1:
            continue

        def cells(name, model=model):
            return {(r["fraction"], r["repeat"]): r["diffroar"] for r in roar
                    if r["model"] == model and r["method"] == name}

        out.append(_compare(f"diffroar:{method}:{model}:vs-random",
                            f"DiffROAR of {method} vs the Random control on model {model} ({label})",
                            cells(method), cells("Random"), (method, "Random"),
                            "retraining cells (levels x repeats) of this one model"))
    return out


def unsaturated_levels(rows: list[dict], method: str) -> list[float]:
    """The levels k <= SMALL_K at which at most half of ``method``'s DiffROAR cells (all models and
    repeats) are saturated. Every model is then averaged over the same levels, so a model is not
    compared on k = 0.02 with another on k = 0.1."""
    cells: dict[float, list[bool]] = {}
    for r in rows:
        if r["method"] == method and r["fraction"] <= SMALL_K:
            cells.setdefault(r["fraction"], []).append(bool(r.get("saturated")))
    return sorted(k for k, flags in cells.items() if sum(flags) <= len(flags) / 2)


def _methods(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


def claims(results: dict[str, list[dict]]) -> list[Claim]:
    """Every comparison the stored rows support, in report order."""
    out: list[Claim | None] = []
    mass = results.get("signal_mass", [])
    for method in _methods(mass):
        if method == "Random":
            continue
        out.append(_compare(f"signal_mass:{method}:robust-vs-standard", f"Signal mass of {method} (0.5 = none)",
                            _per_model(mass, "signal_mass", kind="robust", method=method),
                            _per_model(mass, "signal_mass", kind="standard", method=method),
                            ("robust", "standard"), "model seeds"))
    for regime in ("standard", "robust"):
        out.append(_compare(f"signal_mass:Saliency:{regime}-top-vs-random",
                            f"BlockMNIST-Top control, Saliency signal mass of {regime} models",
                            _per_model(mass, "signal_mass", kind=f"{regime}-top", method="Saliency"),
                            _per_model(mass, "signal_mass", kind=regime, method="Saliency"),
                            ("signal always on top", "random position"), "model seeds"))
    roar_rows = results.get("diffroar", [])
    for method in _methods(roar_rows):
        levels = unsaturated_levels(roar_rows, method)
        if not levels:
            out.append(Claim(f"diffroar:{method}:robust-vs-standard", "saturated", Interval(0, 0, 0, 0),
                             f"DiffROAR of {method} at k <= {SMALL_K}: saturated at every level (most cells have "
                             "top and bottom accuracy both at the ceiling or both at chance): it cannot rank "
                             "anything here."))
            continue
        roar = [r for r in roar_rows if r["fraction"] in levels]
        label = f"k = {', '.join(map(str, levels))}"
        out.append(_compare(f"diffroar:{method}:robust-vs-standard", f"DiffROAR of {method}, mean over {label}",
                            _per_model(roar, "diffroar", kind="robust", method=method),
                            _per_model(roar, "diffroar", kind="standard", method=method),
                            ("robust", "standard"), "model seeds"))
        if method != "Random":
            audited = ("standard", "robust")
            out.append(_compare(f"diffroar:{method}:vs-random",
                                f"DiffROAR of {method} vs the Random control (standard and robust models, {label})",
                                {m: v for m, v in _per_model(roar, "diffroar", method=method).items()
                                 if kind(m) in audited},
                                {m: v for m, v in _per_model(roar, "diffroar", method="Random").items()
                                 if kind(m) in audited},
                                (method, "Random"), "audited models"))
            out += _single_model_vs_random(roar, method, label)
    sensitivity = results.get("class_sensitivity", [])
    for method in _methods(sensitivity):
        if method.endswith("+meta"):
            continue
        out.append(_compare(f"class_sensitivity:{method}:meta-vs-plain",
                            f"Class sensitivity of {method} (Spearman r of top- vs bottom-class maps; lower = "
                            "more class-sensitive), with vs without the meta step",
                            _per_model(sensitivity, "correlation", method=f"{method}+meta"),
                            _per_model(sensitivity, "correlation", method=method),
                            ("with the meta step", "without"), "models"))
    out += unlearning_claims(results.get("unlearning", []))
    synthetic = {r["model"]: r for r in results.get("signal_coordinate", [])}
    for name, row in synthetic.items():
        quality = Interval(row["quality"], row["quality_low"], row["quality_high"], row["quality_n"])
        word = {"above": "positive", "below": "negative (feature inversion)"}.get(verdict(quality), verdict(quality))
        out.append(Claim(f"signal_coordinate:{name}", word, quality,
                         f"Synthetic data, {name} net: attribution quality at level 1 = P[top-1 is the signal] "
                         f"{row['p_top']:.3f} - P[bottom-1 is the signal] {row['p_bottom']:.3f} = "
                         f"{quality.text(signed=True)}: {word}; mean |cos(x, gradient)| {row['abs_cos']:.3f}."))
    return [c for c in out if c is not None]


COMPETITORS = ("RandomLabel", "GradientAscent", "FineTune", "L1Sparse", "SalUn[random mask]",
               "SalUn[anti-salient mask]")


def unlearning_claims(rows: list[dict]) -> list[Claim]:
    """Per scenario: SalUn's gap to Retrain minus each competitor's, paired by seed ("below" = SalUn is
    closer to retraining from scratch), as the paper's ordering claims."""
    gaps = {(r["scenario"], r["method"], r["seed"]): r["gap"] for r in with_gaps(rows) if r.get("gap") is not None}
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        for other in COMPETITORS:
            seeds = [s for (sc, m, s) in gaps if sc == scenario and m == "SalUn" and (scenario, other, s) in gaps]
            if not seeds:
                continue
            diff = mean_interval([gaps[(scenario, "SalUn", s)] - gaps[(scenario, other, s)] for s in seeds])
            word = verdict(diff)
            closer = {"below": "closer to Retrain than", "above": "further from Retrain than"}.get(word, "")
            out.append(Claim(f"unlearning:{scenario}:SalUn-vs-{other}", word, diff,
                             f"{scenario} forgetting: SalUn's average gap to Retrain minus {other}'s "
                             f"{diff.text(signed=True)} over {diff.n} seeds: "
                             + (f"SalUn is {closer} {other}." if closer else f"{word}.")))
    return out


def _per_image(rows: list[dict], model: str, method: str, column: str) -> list[float] | None:
    """The per-image values ``<column>_each`` of ``method`` on ``model`` (averaged over the rows that hold
    them, e.g. ROAD's fractions), or None."""
    found = [r[f"{column}_each"] for r in rows
             if r.get("model") == model and r.get("method") == method and r.get(f"{column}_each")]
    if not found or len({len(v) for v in found}) != 1:
        return None
    return [sum(values) / len(found) for values in zip(*found, strict=True)]


def _standing(row: dict) -> str | None:
    """How far the metric audit lets a metric's ranking be read: trusted, tentative (Krippendorff's alpha reaches
    0.667 and not 0.8), or a robustness metric whose rankings are reliable or tentative across images; None for
    weak and flagged metrics and unreliable rankings."""
    if row.get("trust") == "trusted":
        return "trusted here"
    if row.get("trust") == "tentative":
        return "tentative here: its α reaches 0.667, not 0.8"
    if row.get("trust") == "reported" and row.get("reliability") in ("reliable", "tentative"):
        return f"reported, not judged against the controls; rankings {row['reliability']} across images"
    return None


def evaluation_claims(results: dict[str, list[dict]]) -> list[Claim]:
    """Per model and metric the metric audit lets be read (``_standing``): which method ranks first, and whether
    it is above the second (their paired per-image difference, oriented so that "above" = better under that
    metric)."""
    out = []
    for row in results.get("metric_audit", []):
        standing = _standing(row)
        if standing is None or row.get("direction") not in ("higher", "lower"):
            continue
        ranked = [m for m in row.get("ranking", []) if m not in row.get("controls", [])]
        if len(ranked) < 2:
            continue
        rows = results.get(row["audit"], [])
        first, second = (_per_image(rows, row["model"], m, row["column"]) for m in ranked[:2])
        if first is None or second is None or len(first) != len(second):
            continue
        sign = 1.0 if row["direction"] == "higher" else -1.0
        diff = mean_interval([sign * (a - b) for a, b in zip(first, second, strict=True)])
        word = verdict(diff)
        lead = f"{ranked[0]} ranks first" if word == "above" else f"{ranked[0]} and {ranked[1]} are {word}"
        out.append(Claim(f"evaluate:{row['model']}:{row['metric']}:first", word, diff,
                         f"{row['model']}, {row['metric']} ({standing}; {row['direction']} is better): {lead}: "
                         f"{mean_interval(first).text()} vs {ranked[1]} {mean_interval(second).text()}, paired "
                         f"difference in {ranked[0]}'s favour {diff.text(signed=True)} over {diff.n} images."))
    return out


def headline(results: dict[str, list[dict]]) -> dict:
    """The claims as {key: (word, mean, low, high)} and their sentences, for the command line."""
    found = claims(results)
    return {"claims": {c.key: (c.word, c.interval.mean, c.interval.low, c.interval.high) for c in found},
            "lines": reading(results, found)}


def reading(results: dict[str, list[dict]], found: list[Claim] | None = None) -> list[str]:
    """Short sentences: every claim, then the controls (Random, leak check, randomization), then the influence
    checks' verdicts; "No finished audits in this run yet." only when there is none of these."""
    lines = [c.sentence for c in (claims(results) if found is None else found)]
    lines += [f"{r['model']}: {r['trust']}: {r['reading']}" for r in results.get("metric_audit", [])]
    lines += [c.sentence for c in evaluation_claims(results)]
    roar = results.get("diffroar", [])
    if roar:
        share = sum(bool(r.get("saturated")) for r in roar) / len(roar)
        lines.append(f"{share:.0%} of DiffROAR cells are saturated; a level k where most of a method's cells are "
                     "saturated is left out of that method's verdicts, for every model alike.")
        tied = {r["method"]: r.get("tied_share") for r in roar if r.get("tied_share") is not None}
        heavy = {m: t for m, t in tied.items() if t > 0.1}
        if heavy:
            lines.append("Maps with many exactly equal values (ties broken at random, seeded): "
                         + ", ".join(f"{m} {t:.0%} of pixels tied" for m, t in heavy.items())
                         + ". Their bottom-k pixels are drawn from the tied set (for IG and NormGrad: black "
                         "pixels), so their DiffROAR says how the map ranks its non-tied pixels only.")
    leak = results.get("diffroar_leak", [])
    if leak:
        best = max(leak, key=lambda r: max(r["top_mask_accuracy"], r["bottom_mask_accuracy"]))
        accuracy = max(best["top_mask_accuracy"], best["bottom_mask_accuracy"])
        lines.append(f"Leak check: a model trained on the keep-masks alone reaches up to {accuracy:.3f} test accuracy "
                     f"({best['method']}, k = {best['fraction']}). Near chance, the mask's shape cannot tell the "
                     "class; high, DiffROAR may be measuring the mask wherever the fill differs from the removed "
                     "pixels (fill=\"road\" hides it).")
    standard_r = [r["spearman"] for r in results.get("randomization", [])
                  if r.get("method") == "Saliency" and kind(r.get("model")) == "standard" and r.get("depth") == 1]
    if standard_r:
        lines.append(f"Randomizing only the last layer leaves the standard models' Saliency maps at Spearman "
                     f"{mean_interval(standard_r).text(2)} with the trained ones (lower = the method depends on "
                     "the model).")
    lines += verdicts(results)
    return lines or ["No finished audits in this run yet."]
