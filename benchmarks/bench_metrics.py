"""Metrics without retraining: gradaudit vs Quantus 0.6.0 and Captum on the same model, images and settings.

    python benchmarks/bench_metrics.py            # 100 BlockMNIST test images (a few minutes on 2 CPU cores)
    python benchmarks/bench_metrics.py --quick    # 20 images, one timed repeat
    python benchmarks/bench_metrics.py --seven    # only the evaluate preset's seven maps (issue 33)

The model is gradaudit's small CNN trained one epoch on BlockMNIST (1 x 56 x 28, seed 0), the images the
first N of the test split, the explanation Saliency (|gradient| maps; the signed gradient for infidelity).
Metrics that do not re-run the explainer get the same precomputed maps or attributions in every library;
sensitivity re-runs Saliency in each (Captum's Saliency in Captum and Quantus). Pairs, settings equal:

- deletion: gradaudit's deletion half of ``audit.insertion_deletion`` (``causal_curves`` to the zero image,
  RISE's AUC) vs Quantus ``PixelFlipping`` (features_in_step = our step, baseline 0, softmax), both for the
  class predicted on the clean image;
- infidelity: ``audit.infidelity`` (square perturbations, β-normalised) vs Captum ``metrics.infidelity`` given
  the same squares (normalize=True) and Quantus ``Infidelity`` (its own perturbation: 4 x 4 blocks zeroed
  cumulatively in raster order, H W / 16 of them = our sample count, one run);
- sensitivity: ``audit.sensitivity_max`` vs Captum ``metrics.sensitivity_max`` given the same noise and
  Quantus ``MaxSensitivity`` (radius 0.02, 10 samples, Frobenius norms, no normalisation);
- faithfulness correlation: ``audit.faithfulness_correlation`` vs Quantus ``FaithfulnessCorrelation``
  (subset ceil(H W / 224) pixels, 50 runs, baseline 0, logits).

Seven maps (issue 33): the maps ``gradaudit evaluate --preset quick`` scores (Saliency, InputXGradient, SmoothGrad,
IntegratedGradients, Grad-CAM at the layer ``--layer auto`` picks, and the Random and Sobel controls, built by the
job's own registry), precomputed once, then scored by the metrics whose model passes do not depend on the map:

- infidelity x7: ``audit.infidelity`` on the seven maps with Quantus's perturbation (4 x 4 blocks zeroed
  cumulatively, no normalisation) vs Quantus ``Infidelity`` called once per map: the same numbers, checked;
  and ``audit.infidelity`` as ``evaluate`` runs it (squares, the indicator for the methods that multiply by x);
- faithfulness x7: gradaudit on Quantus's own subsets (``subset_drops`` once, then each map's sums: what the
  audit does after drawing its subsets) vs Quantus ``FaithfulnessCorrelation`` once per map: the same numbers,
  checked; and ``audit.faithfulness_correlation`` itself (its own draws);
- x1 rows: the same gradaudit calls on one map (Saliency), for the cost of seven maps over one.

Times: all cases run in one subprocess, round-robin over the repeats, fastest repeat each (as
bench_attribution.py: this machine's speed drifts between processes). Peak memory: each case alone in its
own subprocess with glibc returning every allocation over 64 KiB at once (MALLOC_MMAP_THRESHOLD_), the peak
RSS during one call above the RSS before it, after a warm-up call (Python and torch CPU tensors alike).
"Speed-up" is the peer's seconds over gradaudit's. The numbers are means over images; where Quantus's own
draws differ from ours, its per-image numbers are also recomputed by gradaudit from Quantus's draws, which
the seeded NumPy generator reproduces, to show the definitions agree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from peak_memory import in_fresh_process, reset_peak, status_mb

STEPS = 32                  # deletion: about 32 steps, ceil(H W / 32) pixels each (the audit's default)
PATCH = 4                   # Quantus Infidelity's default patch; our infidelity draws H W / 16 squares to match
RADIUS, SENSITIVITY_SAMPLES = 0.02, 10
CORRELATION_RUNS, SUBSET_SHARE = 50, 224
QUANTUS_SEED = 0
SEVEN = [("infidelity x7", "gradaudit, Quantus's blocks"), ("infidelity x7", "gradaudit, 1 map"),
         ("infidelity x7", "gradaudit as evaluate (squares)"), ("infidelity x7", "Quantus Infidelity x 7 calls"),
         ("faithfulness x7", "gradaudit, Quantus's subsets"), ("faithfulness x7", "gradaudit, 1 map"),
         ("faithfulness x7", "gradaudit audit (own draws)"),
         ("faithfulness x7", "Quantus FaithfulnessCorrelation x 7")]
BASE = [("deletion", "gradaudit"), ("deletion", "Quantus PixelFlipping"), ("deletion", "gradaudit (ins.+del.)"),
        ("infidelity", "gradaudit"), ("infidelity", "Captum"), ("infidelity", "Quantus Infidelity"),
        ("sensitivity", "gradaudit"), ("sensitivity", "Captum"), ("sensitivity", "Quantus MaxSensitivity"),
        ("faithfulness", "gradaudit"), ("faithfulness", "Quantus FaithfulnessCorrelation")]
CASES = BASE + SEVEN


def setup(weights: str, images: int) -> dict:
    """The model (weights from ``weights``), the first ``images`` BlockMNIST test images, their labels, the
    classes predicted on them, Saliency's |gradient| maps [N, H, W] and signed gradients [N, 1, H, W]."""
    import gradaudit as ga
    from gradaudit import data, models

    model = models.small_cnn((1, 56, 28), 2)
    model.load_state_dict(torch.load(weights))
    model.eval()
    test = data.blockmnist("test")
    x, labels = test.x[:images].float(), test.y[:images].long()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    pixels = x.shape[2] * x.shape[3]
    attributions, maps, multiply = seven_maps(model, x, labels, predicted)
    return {"model": model, "x": x, "labels": labels, "predicted": predicted, "seven": attributions,
            "seven_maps": maps, "multiply_by_input": multiply,
            "maps": ga.Saliency()(model, x, predicted)[:, 0].detach(),
            "gradient": ga.Saliency(abs=False)(model, x, predicted).detach(),
            "step": math.ceil(pixels / STEPS), "samples": (x.shape[2] // PATCH) * (x.shape[3] // PATCH),
            "subset": math.ceil(pixels / SUBSET_SHARE)}


def seven_maps(model, x: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor):
    """The evaluate preset's five methods (its registry, its settings, ``--layer auto``) and the two controls:
    {name: attributions [N, 1, H, W]} explained for the predicted classes (infidelity's), and {name: signed maps
    [N, H, W]} explained for the labels (faithfulness correlation's), a layer map upsampled to the image; and the
    names of the methods whose attributions multiply by the input (``evaluate`` gives them infidelity's indicator)."""
    from dataclasses import replace

    import gradaudit as ga
    from gradaudit.audit.common import importance, method_name
    from gradaudit.jobs.evaluate import MULTIPLY_BY_INPUT
    from gradaudit.jobs.presets import EvaluatePreset
    from gradaudit.jobs.registry import build_methods
    from gradaudit.maps import heatmap, resize
    from gradaudit.methods import LayerMethod
    from gradaudit.methods.feature_map import auto_layer

    settings = EvaluatePreset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer, _ = auto_layer(model, x[:1])
    named = build_methods(settings.methods, replace(settings, layer=layer))
    methods = {method_name(m): m for m in named.values()}
    multiply = {method_name(m) for key, m in named.items() if key in MULTIPLY_BY_INPUT}
    methods.update({"Random": ga.Random(seed=settings.seed), "Sobel": ga.Sobel()})
    attributions, maps = {}, {}
    for name, method in methods.items():
        for classes, found in ((predicted, attributions), (labels, maps)):
            if isinstance(method, LayerMethod):
                value = resize(importance(method, model, x, classes, absolute=False), x.shape[-2:])[:, None]
            else:
                value = method(model, x, classes).detach()
            found[name] = value if found is attributions else heatmap(value, reduce="sum")
    return attributions, maps, multiply


def _quantus():
    """Quantus 0.6.0, imported (an empty ``zennit.torchvision`` stands in where torchvision is missing: zennit's
    __init__ imports it, Quantus never uses it)."""
    import importlib.util
    import types

    if importlib.util.find_spec("torchvision") is None:
        sys.modules.setdefault("zennit.torchvision", types.ModuleType("zennit.torchvision"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus
    return quantus


def _quantus_call(metric, s: dict, y: torch.Tensor, a_batch, **kwargs) -> np.ndarray:
    """``metric`` run on the setup's images with labels ``y``, NumPy in, per-image scores out; NumPy seeded."""
    np.random.seed(QUANTUS_SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(model=s["model"], x_batch=s["x"].numpy(), y_batch=y.numpy(),
                        a_batch=None if a_batch is None else a_batch.numpy(), device="cpu", **kwargs)
    return np.asarray(scores, dtype=np.float64)


def _square_perturbation(s: dict):
    """Our square perturbations in Captum's form: rows are each image repeated ``samples`` times in a row."""
    from gradaudit.audit.metrics import square_perturbations

    x, samples = s["x"], s["samples"]
    perturb = square_perturbations(x, samples, seed=0)
    examples, draws = torch.arange(len(x)).repeat_interleave(samples), torch.arange(samples).repeat(len(x))

    def captum_perturbation(inputs):
        return perturb(inputs, examples, draws)

    return captum_perturbation


def quantus_blocks(x: torch.Tensor):
    """Quantus Infidelity's perturbation as a gradaudit perturbation: draw k zeroes 4 x 4 blocks 0..k, in raster
    order; it returns (I, x') with I = x - x', the change Quantus dots with the attribution."""
    blocks = [(top, left) for top in range(0, x.shape[2], PATCH) for left in range(0, x.shape[3], PATCH)]
    kept = torch.ones(len(blocks), *x.shape[1:])
    for k, (top, left) in enumerate(blocks):
        kept[k:, :, top:top + PATCH, left:left + PATCH] = 0

    def cumulative_blocks(rows, examples, draws):
        moved = rows * kept[draws]
        return rows - moved, moved

    return cumulative_blocks, len(blocks)


def quantus_subsets(s: dict) -> torch.Tensor:
    """Quantus FaithfulnessCorrelation's own subsets [N, runs, size], reproduced from its seeded NumPy generator
    (batches of 64 images, one ``np.random.choice`` per image and run)."""
    x = s["x"]
    n, pixels, batch = len(x), x[0].numel(), 64
    np.random.seed(QUANTUS_SEED)
    subsets = torch.zeros(n, CORRELATION_RUNS, s["subset"], dtype=torch.long)
    for start in range(0, n, batch):
        size = min(batch, n - start)
        for run in range(CORRELATION_RUNS):
            subsets[start:start + size, run] = torch.from_numpy(np.stack(
                [np.random.choice(pixels, s["subset"], replace=False) for _ in range(size)]))
    return subsets


def seven_call(pair: str, impl: str, s: dict):
    """A no-argument callable running one seven-map case once; it returns {map name: per-image values}."""
    from gradaudit import audit
    from gradaudit.audit.common import pearson
    from gradaudit.audit.faithfulness_correlation import subset_drops, subset_sums
    from gradaudit.jobs.presets import EvaluatePreset

    model, x, labels, predicted = s["model"], s["x"], s["labels"], s["predicted"]
    data = (x, labels)
    if pair == "infidelity x7":
        blocks, count = quantus_blocks(x)
        chosen = {"Saliency": s["seven"]["Saliency"]} if impl.endswith("1 map") else s["seven"]

        def ours(**kwargs):
            rows = audit.infidelity(chosen, model, data, **kwargs).rows
            return {r["method"]: r["infidelity_each"] for r in rows}

        if impl.startswith("gradaudit, "):
            return lambda: ours(perturbation=blocks, samples=count, normalize=False)
        if impl.startswith("gradaudit as evaluate"):
            return lambda: ours(samples=EvaluatePreset().infidelity_samples,
                                binary=[n for n in chosen if n in s["multiply_by_input"]])
        metric = _quantus().Infidelity(perturb_patch_sizes=[PATCH], n_perturb_samples=1, perturb_baseline=0.0,
                                       abs=False, normalise=False, disable_warnings=True)
        return lambda: {n: _quantus_call(metric, s, predicted, a).tolist() for n, a in s["seven"].items()}
    if impl == "gradaudit audit (own draws)":
        return lambda: {r["method"]: r["faithfulness_correlation_each"] for r in audit.faithfulness_correlation(
            s["seven_maps"], model, data, subset=s["subset"], samples=CORRELATION_RUNS).rows}
    if impl.startswith("gradaudit"):
        subsets = quantus_subsets(s)
        chosen = {"Saliency": s["seven_maps"]["Saliency"]} if impl.endswith("1 map") else s["seven_maps"]

        def call():
            drops = subset_drops(model, x, labels, subsets, 0.0)
            return {n: pearson(subset_sums(m, subsets), drops).tolist() for n, m in chosen.items()}

        return call
    metric = _quantus().FaithfulnessCorrelation(nr_runs=CORRELATION_RUNS, subset_size=s["subset"], perturb_baseline=0.0,
                                                abs=False, normalise=False, return_aggregate=False,
                                                disable_warnings=True)
    return lambda: {n: _quantus_call(metric, s, labels, m[:, None]).tolist() for n, m in s["seven_maps"].items()}


def make_call(pair: str, impl: str, s: dict):
    """A no-argument callable running one case once; it returns the per-image values (or curves)."""
    from gradaudit import audit

    if pair.endswith("x7"):
        return seven_call(pair, impl, s)
    model, x, labels, predicted = s["model"], s["x"], s["labels"], s["predicted"]
    if pair == "deletion":
        if impl == "gradaudit":
            from gradaudit.audit.metrics import auc, causal_curves

            return lambda: auc(causal_curves(model, x, s["maps"], predicted, x, torch.zeros_like(x), s["step"])
                               .double()).numpy()
        if impl == "gradaudit (ins.+del.)":
            return lambda: np.array(audit.insertion_deletion({"Saliency": s["maps"]}, model, (x, labels),
                                                             step=s["step"]).rows[0]["deletion_each"])
        metric = _quantus().PixelFlipping(features_in_step=s["step"], perturb_baseline=0.0, abs=False, normalise=False,
                                          disable_warnings=True)
        return lambda: _quantus_call(metric, s, predicted, s["maps"][:, None], softmax=True)
    if pair == "infidelity":
        if impl == "gradaudit":
            return lambda: np.array(audit.infidelity({"Saliency": s["gradient"]}, model, (x, labels),
                                                     samples=s["samples"]).rows[0]["infidelity_each"])
        if impl == "Captum":
            from captum.metrics import infidelity

            perturb = _square_perturbation(s)
            return lambda: infidelity(model, perturb, x, s["gradient"], target=predicted,
                                      n_perturb_samples=s["samples"], normalize=True).double().numpy()
        metric = _quantus().Infidelity(perturb_patch_sizes=[PATCH], n_perturb_samples=1, perturb_baseline=0.0,
                                       abs=False, normalise=False, disable_warnings=True)
        return lambda: _quantus_call(metric, s, predicted, s["gradient"])
    if pair == "sensitivity":
        if impl == "gradaudit":
            import gradaudit as ga

            return lambda: np.array(audit.sensitivity_max({"Saliency": ga.Saliency()}, model, (x, labels),
                                                          radius=RADIUS, samples=SENSITIVITY_SAMPLES)
                                    .rows[0]["sensitivity_max_each"])
        if impl == "Captum":
            from captum.attr import Saliency
            from captum.metrics import sensitivity_max

            from gradaudit.audit.sensitivity_max import uniform_noise

            def call():
                noise = uniform_noise(x, SENSITIVITY_SAMPLES, RADIUS, seed=0)(torch.arange(len(x)))
                scores = sensitivity_max(Saliency(model).attribute, x, n_perturb_samples=SENSITIVITY_SAMPLES,
                                         perturb_func=lambda rows: rows + noise.flatten(0, 1), target=labels)
                return scores.double().numpy()

            return call
        quantus = _quantus()
        metric = quantus.MaxSensitivity(nr_samples=SENSITIVITY_SAMPLES, lower_bound=RADIUS, abs=False, normalise=False,
                                        disable_warnings=True)
        return lambda: _quantus_call(metric, s, labels, None, explain_func=quantus.explain,
                                     explain_func_kwargs={"method": "Saliency"})
    if impl == "gradaudit":
        return lambda: np.array(audit.faithfulness_correlation({"Saliency": s["maps"]}, model, (x, labels),
                                                               subset=s["subset"], samples=CORRELATION_RUNS)
                                .rows[0]["faithfulness_correlation_each"])
    metric = _quantus().FaithfulnessCorrelation(nr_runs=CORRELATION_RUNS, subset_size=s["subset"], perturb_baseline=0.0,
                                                abs=False, normalise=False, return_aggregate=False,
                                                disable_warnings=True)
    return lambda: _quantus_call(metric, s, labels, s["maps"][:, None])




def run_case(job: dict) -> dict:
    """Peak memory of one case alone in this process (after a warm-up call)."""
    torch.set_num_threads(job["threads"])
    s = setup(job["weights"], job["images"])
    call = make_call(job["pair"], job["impl"], s)
    call()
    idle = reset_peak()
    call()
    return {"peak_mb": status_mb("VmHWM") - idle}


def time_cases(job: dict) -> dict:
    """Seconds of every case (fastest of ``repeats``, round-robin) and each case's values, in this process.
    A case that raises is recorded with its error instead."""
    torch.set_num_threads(job["threads"])
    s = setup(job["weights"], job["images"])
    calls, results = {}, {}
    for pair, impl in SEVEN if job.get("seven") else CASES:
        key = f"{pair}|{impl}"
        try:
            calls[key] = make_call(pair, impl, s)
            values = calls[key]()                                                            # warm-up
            results[key] = {"values": values if isinstance(values, dict) else np.asarray(values).tolist(),
                            "seconds": []}
        except Exception as error:              # a peer failing on this setup is a row of the table, not a crash
            calls.pop(key, None)
            results[key] = {"error": f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:80]}"}
    for _ in range(job["repeats"]):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            results[key]["seconds"].append(time.perf_counter() - start)
    for result in results.values():
        if "seconds" in result:
            result["seconds"] = min(result["seconds"])
    if not job.get("seven"):
        results["checks"] = agreement_checks(s, results)
    return results


def agreement_checks(s: dict, results: dict) -> dict:
    """Where Quantus's draws or conventions differ from ours, gradaudit's numbers recomputed from Quantus's own
    draws (reproduced from its seeded NumPy generator and batches of 64), to compare per image."""
    import gradaudit as ga
    from gradaudit.audit.faithfulness_correlation import correlation_scores
    from gradaudit.audit.metrics import infidelity_scores
    from gradaudit.audit.sensitivity_max import sensitivity_scores

    model, x, labels, predicted = s["model"], s["x"], s["labels"], s["predicted"]
    n, pixels, batch = len(x), x[0].numel(), 64
    checks = {}
    with torch.no_grad():
        clean = torch.softmax(model(x), 1)[torch.arange(n), predicted].double().numpy()
    curves = results.get("deletion|Quantus PixelFlipping", {}).get("values")
    if curves is not None:
        curves = np.asarray(curves)
        full = np.concatenate([clean[:, None], curves], 1)         # RISE's curve: the clean image first
        checks["deletion"] = {"quantus_rise_auc": ((full.sum(1) - full[:, 0] / 2 - full[:, -1] / 2)
                                                   / (full.shape[1] - 1)).tolist(),
                              "quantus_auc": np.trapezoid(curves, axis=1).tolist()}
    blocks, count = quantus_blocks(x)
    checks["infidelity"] = infidelity_scores(model, x, s["gradient"], predicted, blocks, count,
                                             normalize=False).tolist()
    np.random.seed(QUANTUS_SEED)
    noise = torch.zeros(n, SENSITIVITY_SAMPLES, *x.shape[1:], dtype=torch.float64)
    for start in range(0, n, batch):
        size = min(batch, n - start)
        for sample in range(SENSITIVITY_SAMPLES):
            noise[start:start + size, sample] = torch.from_numpy(
                np.random.uniform(-RADIUS, RADIUS, (size, pixels))).view(size, *x.shape[1:])
    checks["sensitivity"] = sensitivity_scores(ga.Saliency(), model, x, labels,
                                               lambda e: noise[e].float(), SENSITIVITY_SAMPLES).tolist()
    checks["faithfulness"] = correlation_scores(model, x, s["maps"], labels, quantus_subsets(s), 0.0).tolist()
    return checks


def measure(job: dict) -> float:
    """Peak memory (MB) of one case alone in a fresh subprocess (see the module docstring)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = in_fresh_process(__file__, ["--case", json.dumps(job)], env)
    return float("nan") if result is None else result["peak_mb"]


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def numbers_note(pair: str, impl: str, values, ours, checks: dict) -> str:
    """How a case's per-image numbers compare with gradaudit's, and why where they differ."""
    if impl == "gradaudit" or ours is None:
        return "-"
    if impl.startswith("gradaudit"):
        return f"same AUCs as the deletion-only row: max |diff| {_max_diff(values, ours):.1e}"
    if impl == "Captum":
        return f"same perturbations: max |diff| {_max_diff(values, ours):.1e}"
    if pair == "deletion":
        rise = checks["deletion"]["quantus_rise_auc"]
        return (f"own AUC (trapz of the {len(values[0])} perturbed scores, dx 1, no clean point) "
                f"{np.mean(checks['deletion']['quantus_auc']):.3f}; RISE's AUC of its curves {np.mean(rise):.4f}, "
                f"max |diff| {_max_diff(rise, ours):.1e} (equal map values may be ordered otherwise)")
    if pair == "infidelity":
        return (f"differs on purpose: its perturbation zeroes 4x4 blocks cumulatively, no normalisation; "
                f"ours on its blocks: max |diff| {_max_diff(values, checks['infidelity']):.1e}")
    label = "sensitivity" if pair == "sensitivity" else "faithfulness"
    return (f"its own draws (mean differs by sampling); ours on its draws: max |diff| "
            f"{_max_diff(values, checks[label]):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="20 images, one timed repeat")
    parser.add_argument("--seven", action="store_true", help="only the seven maps of the evaluate preset")
    parser.add_argument("--images", type=int, default=None, help="images evaluated (default 100; 20 with --quick)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.cases:
        print(json.dumps(time_cases(json.loads(args.cases))))
        return
    from gradaudit import data, models, train

    images = args.images or (20 if args.quick else 100)
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = train.fit(models.small_cnn((1, 56, 28), 2), data.blockmnist("train"), epochs=1, progress=False)
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "small_cnn.pt")
        torch.save(model.state_dict(), weights)
        job = {"weights": weights, "images": images, "threads": args.threads, "repeats": 1 if args.quick else 3,
               "seven": args.seven}
        results = in_fresh_process(__file__, ["--cases", json.dumps(job)])
        if results is None:
            return
        memory = {f"{pair}|{impl}": measure({**job, "pair": pair, "impl": impl})
                  for pair, impl in (SEVEN if args.seven else CASES) if "error" not in results[f"{pair}|{impl}"]}
    if args.seven:
        print(f"{images} BlockMNIST test images (1x56x28), small CNN (1 epoch), {args.threads} threads; fastest of "
              f"{job['repeats']}")
        print_seven(results, memory)
        print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        return
    s = {"step": math.ceil(56 * 28 / STEPS), "samples": (56 // PATCH) * (28 // PATCH),
         "subset": math.ceil(56 * 28 / SUBSET_SHARE)}
    print(f"{images} BlockMNIST test images (1x56x28), small CNN (1 epoch), Saliency, {args.threads} threads; "
          f"deletion step {s['step']} px, infidelity {s['samples']} perturbations, sensitivity radius {RADIUS} x "
          f"{SENSITIVITY_SAMPLES} samples, faithfulness subset {s['subset']} px x {CORRELATION_RUNS} runs; "
          f"fastest of {job['repeats']}\n")
    header = (f"{'metric':13} {'library':32} {'seconds':>8} {'peak MB':>8} {'speed-up':>9} {'mean':>9}  "
              f"numbers vs gradaudit")
    print(header)
    print("-" * len(header))
    for pair, impl in BASE:
        key = f"{pair}|{impl}"
        result, ours = results[key], results[f"{pair}|gradaudit"]
        label = pair if impl == "gradaudit" else ""
        if "error" in result:
            print(f"{label:13} {impl:32} {'failed':>8} {'-':>8} {'-':>9} {'-':>9}  {result['error']}")
            continue
        values = result["values"]
        mean = np.mean(checks_auc(pair, impl, values, results["checks"]))
        speed = speed_up(pair, impl, result, results)
        note = numbers_note(pair, impl, values, ours.get("values"), results["checks"])
        print(f"{label:13} {impl:32} {result['seconds']:8.2f} {memory[key]:8.0f} {speed:>9} {mean:9.4f}  {note}",
              flush=True)
    print("\nspeed-up: the peer's seconds / gradaudit's (above 1: gradaudit is faster). mean: over images "
          "(deletion: RISE's AUC, for Quantus computed from its curves with the clean score first).")
    print_seven(results, memory)
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


def print_seven(results: dict, memory: dict) -> None:
    """The seven-map table: seconds, peak memory, speed-up over Quantus, seven maps over one, and the largest
    per-image difference from Quantus's numbers relative to the map's largest value (float32 in Quantus; the run
    fails where it is 1e-4 or more)."""
    from gradaudit.jobs.presets import EvaluatePreset

    names = list(results[f"faithfulness x7|{SEVEN[-1][1]}"].get("values", {}))
    print(f"\nthe seven maps of gradaudit evaluate --preset quick ({', '.join(names)}), precomputed:\n")
    header = f"{'metric':16} {'library':38} {'seconds':>8} {'peak MB':>8} {'speed-up':>9}  numbers"
    print(header)
    print("-" * len(header))
    for pair in ("infidelity x7", "faithfulness x7"):
        impls = [i for p, i in SEVEN if p == pair]
        equal, one, audit_row, peer = impls
        get = {i: results[f"{pair}|{i}"] for i in impls}
        failed = [i for i in impls if "error" in get[i]]
        if failed:
            for i in failed:
                print(f"{pair:16} {i:38} failed: {get[i]['error']}")
            continue
        gap = max(_max_diff(get[equal]["values"][n], get[peer]["values"][n])
                  / max(np.max(np.abs(get[peer]["values"][n])), 1e-12) for n in get[peer]["values"])
        assert gap < 1e-4, f"{pair}: gradaudit and Quantus differ by {gap:.1e} (relative) on the same draws"
        for i in impls:
            seconds = get[i]["seconds"]
            if i == equal:
                note = f"equal to Quantus's on every map and image (largest |diff| / the map's largest value {gap:.0e})"
            elif i == one:
                note = f"one map; seven cost {get[equal]['seconds'] / seconds:.2f}x one"
            elif i == audit_row and pair == "infidelity x7":
                note = (f"as evaluate runs it: {EvaluatePreset().infidelity_samples} random squares per image, not "
                        "Quantus's 98 blocks (other work: no speed-up given)")
            elif i == audit_row:
                note = "the audit itself, its own draws of the same size, seven maps"
            else:
                note = "one call per map"
            comparable = i not in (peer, one) and not (i == audit_row and pair == "infidelity x7")
            speed = f"{get[peer]['seconds'] / seconds:.1f}x" if comparable else "-"
            print(f"{pair if i == equal else '':16} {i:38} {seconds:8.2f} {memory[f'{pair}|{i}']:8.0f} {speed:>9}  "
                  f"{note}", flush=True)
    print("\nspeed-up: Quantus's seconds for the seven maps / gradaudit's.")


def speed_up(pair: str, impl: str, result: dict, results: dict) -> str:
    """The peer's seconds over gradaudit's; for the whole insertion_deletion audit, Quantus's over its own."""
    if impl == "gradaudit":
        return "-"
    ours, peer = (result, results[f"{pair}|Quantus PixelFlipping"]) if impl.startswith("gradaudit") else (
        results[f"{pair}|gradaudit"], result)
    return "-" if "error" in ours or "error" in peer else f"{peer['seconds'] / ours['seconds']:.1f}x"


def checks_auc(pair: str, impl: str, values, checks: dict):
    """The per-image numbers a case's mean is taken over (Quantus's deletion curves turned into RISE's AUC)."""
    return checks["deletion"]["quantus_rise_auc"] if impl.startswith("Quantus") and pair == "deletion" else values


if __name__ == "__main__":
    main()
