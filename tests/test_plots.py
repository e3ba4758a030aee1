"""Every result the library returns plots: each audit (found by scanning the source for ``AuditResult("...")``)
and each side table the report summarises, run on a tiny model and drawn alone and, over two seeds, in the report."""

import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from nets import mlp, small_cnn

import gradaudit as ga
from gradaudit import audit, data, models, unlearn
from gradaudit.audit import AuditResult, influence_checks
from gradaudit.audit.plots import PLOTTERS
from gradaudit.report.html import SUMMARY, _section

matplotlib.use("Agg")

SOURCE = Path(__file__).parents[1] / "src" / "gradaudit"
AUDITS = sorted({name for path in SOURCE.rglob("*.py")
                 for name in re.findall(r'AuditResult\(\s*"(\w+)"', path.read_text(encoding="utf-8"))})
# The report's tables beyond the audits' own, less the job's accuracy table of the audited models.
SIDE_TABLES = sorted(set(SUMMARY) - set(AUDITS) - {"models"})


@pytest.fixture(scope="module")
def results():
    """name -> AuditResult of every audit and side table, each from a run on tiny models and data."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=generator)
    y = torch.randint(0, 3, (12,), generator=generator)
    net = small_cnn(classes=3).eval()
    methods = {"Saliency": ga.Saliency(), "Random": ga.Random()}
    mask = torch.zeros(12, 1, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    blocks = type("Blocks", (), {"x": x, "y": y, "signal_mask": mask})()
    roar = audit.diffroar(methods, net, (x, y), (x, y), model_fn=lambda: models.mlp((1, 8, 8), 3, hidden=8),
                          fractions=(0.25, 0.5), repeats=2, epochs=1, leak_check=True, progress=False)
    points = torch.randn(40, 10, generator=generator)
    labels = (points[:, 0] > 0).long()
    forget, retain = (points[:8], labels[:8]), (points[8:30], labels[8:30])
    vector_net = mlp(inputs=10, classes=2).eval()
    saliency = unlearn.weight_saliency(vector_net, forget)
    two = (x[:2], y[:2])
    return {
        "activation_profiles": audit.activation_profiles(net, (x, y), "3"),
        "class_sensitivity": audit.class_sensitivity(methods, net, (x, y)),
        "diffroar": roar,
        "diffroar_leak": AuditResult("diffroar_leak", roar.extra["leak"]),
        "local_faithfulness": audit.local_faithfulness({"Gradient": ga.Saliency(abs=False)}, net, x, samples=16,
                                                       neighbourhoods=["gaussian:0.1", "mask:0.5"], limit=4),
        "randomization": audit.randomization(methods, net, (x, y), limit=6),
        "road": audit.road(methods, net, (x, y), fractions=(0.25, 0.5, 0.75)),
        "signal_coordinate": audit.signal_coordinate(None, vector_net, data.signal_coordinates(24)),
        "signal_mass": audit.signal_mass(methods, net, blocks),
        "unlearning": audit.unlearning([unlearn.Retrain(epochs=1, batch_size=8), unlearn.FineTune(epochs=1)],
                                       vector_net, forget, retain, (points[30:], labels[30:]), seeds=(0, 1),
                                       progress=False),
        "insertion_deletion": audit.insertion_deletion(methods, net, (x, y), step=16),
        "pointing_game": audit.pointing_game(methods, net, blocks, tolerance=2),
        "relevance_mass": audit.relevance_mass(methods, net, blocks),
        "relevance_rank": audit.relevance_rank(methods, net, blocks),
        "infidelity": audit.infidelity(methods, net, (x, y), samples=4),
        "sensitivity_max": audit.sensitivity_max(methods, net, (x, y), samples=3),
        "faithfulness_correlation": audit.faithfulness_correlation(methods, net, (x, y), samples=4),
        "monotonicity": audit.monotonicity(methods, net, (x, y), step=16),
        "metric_audit": audit.metric_audit(
            [audit.insertion_deletion({**methods, "Sobel": ga.Sobel()}, net, (x, y), step=16),
             audit.infidelity({**methods, "Sobel": ga.Sobel()}, net, (x, y), samples=4)], resamples=20),
        "loo_correlation": influence_checks.loo_correlation((points[:30], labels[:30]), (points[30:], labels[30:]),
                                                            strategies=("exact",), removals=4),
        "lds": influence_checks.lds(vector_net, (points, labels), (points[:4], labels[:4]), ("identity",),
                                    model_fn=lambda: mlp(inputs=10, classes=2), subsets_count=3, epochs=1,
                                    progress=False),
        "brittleness": audit.brittleness(vector_net, (points, labels), (points[:4], labels[:4]), ("identity",),
                                         model_fn=lambda: mlp(inputs=10, classes=2), ks=(2, 4), epochs=1,
                                         progress=False),
        "mislabel_detection": influence_checks.mislabel_detection((points, labels), ("diagonal",),
                                                                  model_fn=lambda: mlp(inputs=10, classes=2),
                                                                  seeds=(0, 1), epochs=1, progress=False),
        "sparseness": audit.sparseness(methods, net, two),
        "complexity": audit.complexity(methods, net, two),
        "completeness": audit.completeness(methods, net, two),
        "input_invariance": audit.input_invariance(methods, net, two),
        "local_lipschitz": audit.local_lipschitz(methods, net, two, samples=1),
        "relative_input_stability": audit.relative_input_stability(methods, net, two, samples=1),
        "region_perturbation": audit.region_perturbation(methods, net, two, regions=1),
        "irof": audit.irof(methods, net, two, segment=4),
        "mprt": audit.mprt(methods, net, two),
        "smprt": audit.smprt(methods, net, two, samples=1),
        "emprt": audit.emprt(methods, net, two),
        "random_logit": audit.random_logit(methods, net, two),
        "weight_saliency": AuditResult("weight_saliency", [
            {"model": "random/0", "scenario": "random", "seed": 0, **row} for row in saliency.summary()]),
    }


def _holds_data(axis) -> bool:
    """The axis shows a finite value of a data line, a bar or an image (reference lines across the axis,
    drawn in axis coordinates, do not count)."""
    values = [line.get_ydata() for line in axis.lines if line.get_transform() == axis.transData]
    values += [[patch.get_height()] for patch in axis.patches if isinstance(patch, Rectangle)]
    values += [image.get_array() for image in axis.images]
    return any(np.isfinite(np.asarray(v, dtype=float)).any() for v in values if len(v))


@pytest.mark.parametrize("name", AUDITS + SIDE_TABLES)
def test_every_result_plots_alone_and_in_the_report(name, results):
    assert name in PLOTTERS, f"no plotter for {name!r}: add one to gradaudit.audit.plots.PLOTTERS"
    assert name in results, f"{name!r} has no tiny run in tests/test_plots.py's results fixture: add one"
    figure = results[name].plot()
    assert isinstance(figure, Figure)
    assert any(_holds_data(axis) for axis in figure.axes), name
    seeds = [{**row, "model": f"net/{seed}"} for seed in (0, 1) for row in results[name].rows]
    assert _section(name, seeds)["image"]                       # the report averages the seeds and draws it too


def test_the_audits_found_are_the_known_ones():
    assert {"road", "signal_coordinate", "diffroar", "unlearning"} <= set(AUDITS)
    assert {"diffroar_leak", "weight_saliency"} <= set(SIDE_TABLES)


def test_road_draws_morf_and_lerf_curves_per_method_with_intervals(results):
    axis = results["road"].plot().axes[0]
    curves = {line.get_label(): line for line in axis.lines}
    assert set(curves) == {f"{m} {o}" for m in ("Saliency", "Random") for o in ("MoRF", "LeRF")}
    assert list(curves["Saliency MoRF"].get_xdata()) == [0.25, 0.5, 0.75]
    rows = [r for r in results["road"].rows if r["method"] == "Saliency"]
    assert list(curves["Saliency MoRF"].get_ydata()) == [r["morf_accuracy"] for r in rows]
    assert len(axis.collections) == 4                          # one shaded 95% interval per curve
    assert axis.get_xlabel() == "fraction of pixels imputed away"


def test_class_sensitivity_axis_names_spearman(results):
    axis = results["class_sensitivity"].plot().axes[0]
    assert axis.get_ylabel() == "Spearman r"


def test_a_missing_plotter_or_no_rows_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="no plotter for the 'new_audit' audit"):
        AuditResult("new_audit", [{"model": "m", "value": 1.0}]).plot()
    with pytest.raises(ValueError, match="the 'road' result has no rows"):
        AuditResult("road", []).plot()


def test_insertion_deletion_draws_one_panel_per_method_with_the_controls_in_grey(results):
    figure = results["insertion_deletion"].plot()
    axes = [axis for axis in figure.axes if axis.lines]
    assert len(axes) == 1 and axes[0].get_title().startswith("Saliency")       # Random is a control, not a panel
    colours = {line.get_label(): line.get_color() for line in axes[0].lines}
    assert colours["Random insertion"] == colours["Random deletion"] == "0.55"
    assert colours["Saliency insertion"] == "C0"


def test_the_metric_audit_is_one_grid_of_ranks_with_the_verdict_marked(results):
    rows = results["metric_audit"].rows
    axis = results["metric_audit"].plot().axes[0]
    ranks = axis.images[0].get_array()
    assert ranks.shape == (len(rows), 3)                                      # metrics x (Saliency, Random, Sobel)
    for i, row in enumerate(rows):
        assert [int(r) for r in ranks[i]] == [row["ranking"].index(m) + 1 for m in ("Saliency", "Random", "Sobel")]
    labels = [label.get_text() for label in axis.get_yticklabels()]
    assert labels == [f"{r['metric']}: {r['trust']}, α {r['alpha']:.2f}" for r in rows]


def test_mprt_draws_one_curve_per_method_over_the_randomized_layers(results):
    rows = results["mprt"].rows
    axis = results["mprt"].plot().axes[0]
    curves = {line.get_label(): line for line in axis.lines}
    assert set(curves) == {"Saliency", "Random"}
    for row in rows:
        assert list(curves[row["method"]].get_xdata()) == list(range(1, len(row["layers"]) + 1))
        assert np.allclose(curves[row["method"]].get_ydata(), row["spearman_by_layer"])
    assert axis.get_xlabel() == "layers randomized (from the top)"
