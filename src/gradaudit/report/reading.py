"""The result in words: the comparisons the paper makes, with the measured numbers."""

from __future__ import annotations


SMALL_K = 0.1  # "small k": the levels at or below 10 % of pixels kept


def _mean(rows, **match):
    values = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return sum(v["value"] for v in values) / len(values) if values else None


def headline(results: dict[str, list[dict]]) -> dict[str, float | None]:
    """The numbers the paper's claims rest on (None where the run lacks them)."""
    mass = [{**r, "value": r["signal_mass"]} for r in results.get("signal_mass", [])]
    roar = [{**r, "value": r["diffroar"]} for r in results.get("diffroar", [])]
    small = sorted({r["fraction"] for r in roar if r["fraction"] <= SMALL_K})
    per_k = {k: (_mean(roar, model="standard", method="Saliency", fraction=k),
                 _mean(roar, model="robust", method="Saliency", fraction=k)) for k in small}
    roar_small = [r for r in roar if r["fraction"] <= SMALL_K]
    return {
        "signal_mass_standard": _mean(mass, model="standard", method="Saliency"),
        "signal_mass_robust": _mean(mass, model="robust", method="Saliency"),
        "small_k": small,
        "diffroar_per_k": per_k,
        "diffroar_standard": _mean(roar_small, model="standard", method="Saliency"),
        "diffroar_robust": _mean(roar_small, model="robust", method="Saliency"),
        "diffroar_random": _mean(roar, method="Random"),
    }


def reading(results: dict[str, list[dict]]) -> list[str]:
    """Short sentences comparing standard and robust models, as the paper does."""
    h = headline(results)
    lines = []
    if h["signal_mass_standard"] is not None and h["signal_mass_robust"] is not None:
        verdict = "above" if h["signal_mass_robust"] > h["signal_mass_standard"] else "NOT above"
        lines.append(
            f"Input-gradient signal mass: robust {h['signal_mass_robust']:.3f} vs standard "
            f"{h['signal_mass_standard']:.3f} (0.5 = no preference for the signal block): the robust "
            f"model is {verdict} the standard one, as Shah et al. (2021) found.")
    if h["diffroar_standard"] is not None and h["diffroar_robust"] is not None:
        verdict = "above" if h["diffroar_robust"] > h["diffroar_standard"] else "NOT above"
        lines.append(
            f"DiffROAR of input gradients averaged over small k (k <= {SMALL_K}: {', '.join(map(str, h['small_k']))}): "
            f"robust {h['diffroar_robust']:+.3f} vs standard {h['diffroar_standard']:+.3f}: robust is {verdict} "
            "standard. Per k (standard / robust): "
            + "; ".join(f"{k}: {s:+.3f} / {r:+.3f}" for k, (s, r) in h["diffroar_per_k"].items()) + ".")
    if h["diffroar_random"] is not None:
        lines.append(f"Random attributions, the control, average DiffROAR {h['diffroar_random']:+.3f} over all k "
                     "(near 0 means the protocol itself adds no signal).")
    for row in results.get("randomization", []):
        if row.get("method") == "Saliency" and row.get("model") == "standard" and row.get("depth") == 1:
            lines.append(f"Randomizing only the last layer leaves the standard model's Saliency maps at Spearman "
                         f"{row['spearman']:.2f} with the trained ones (lower = the method depends on the model).")
    if not lines:
        lines.append("No finished audits in this run yet.")
    return lines
