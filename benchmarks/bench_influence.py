"""Training-data attribution speed, memory and agreement: gradaudit.influence vs kronfluence and Captum.

    python benchmarks/bench_influence.py            # 1,000 bundled MNIST digits, 100 queries (an hour on 2 cores)
    python benchmarks/bench_influence.py --quick    # 300 digits, 20 queries, one repeat (about 20 minutes)

A small CNN (``models.small_cnn``, width 8: 9,098 weights in conv1, conv2, fc) is trained for three
epochs of SGD on the digits (one checkpoint per epoch, for TracIn); then each pair fits and scores
the same queries against the same training set:
- identity, diagonal, kfac, ekfac: gradaudit (its defaults: true Fisher, damping None) against
  kronfluence 1.0.1 with the same strategy, the same sampled labels (both draw them by inverse CDF
  from gradaudit's seeded uniforms) and its heuristic damping (``damping_factor=None``: 0.1 x the mean
  eigenvalue per layer, as gradaudit's None); kronfluence in its default dtypes, ``--kron-batch`` rows;
- tracin: ``influence.tracin`` over the three checkpoints against Captum's TracInCP (its per-batch
  gradient hooks, ``sample_wise_grads_per_batch=True``, ``--captum-batch`` rows);
- exact: ``strategy="exact"`` against Captum's NaiveInfluenceFunction, both on ``--exact-layer`` only
  (Captum's Hessian takes one double-backward pass per weight and batch, too long for all 9,098 weights;
  over one layer of this piecewise-linear net the Hessian is the Gauss-Newton matrix ``exact`` uses), with
  the fixed damping ``--exact-damping`` (the heuristic one is tiny on this well-fitted net, which leaves
  Captum's float32 eigendecomposition ill-conditioned). Captum's Hessian is of the summed loss and its
  scores carry no factor N: it gets ``hessian_reg`` = N x the damping and every eigenvector
  (``projection_dim`` = the layer's size), and its scores are multiplied by N.
Times: all cases in one subprocess, round-robin over the repeats, fastest repeat of each phase ("fit":
factors, or Captum's constructor; "score": the [Q, N] scores). kronfluence's times include writing its
factors and scores to disk, as it always does. Peak memory: each case alone in its own subprocess, the
peak RSS of one fit + score above the RSS before it (after a warm-up run; glibc returns allocations
over 64 KiB to the system at once), as ``bench_attribution.py`` measures it. "check": the largest
difference of the scores over the largest |score| of the peer's. Other jobs share this machine's cores:
its load average is printed before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from peak_memory import in_fresh_process, reset_peak, status_mb
from torch import nn
from torch.utils.data import TensorDataset

PAIRS = {
    # pair: (gradaudit case, peer case, peer name)
    "identity": ("identity", "kron-identity", "kronfluence"),
    "diagonal": ("diagonal", "kron-diagonal", "kronfluence"),
    "kfac": ("kfac", "kron-kfac", "kronfluence"),
    "ekfac": ("ekfac", "kron-ekfac", "kronfluence"),
    "tracin": ("tracin", "captum-tracin", "captum TracInCP"),
    "exact": ("exact", "captum-naive", "captum Naive"),
}
WIDTH = 8
LRS = (0.02, 0.02, 0.02)        # SGD learning rate (momentum 0.9) of each epoch; one checkpoint after each




def _model() -> nn.Module:
    from gradaudit import models

    return models.small_cnn((1, 28, 28), 10, width=WIDTH)


def prepare(folder: Path, train_size: int, queries: int) -> float:
    """Train the CNN on the first ``train_size`` bundled digits, write the data and a checkpoint per
    epoch into ``folder``; return the accuracy on the queries."""
    from gradaudit import train as ga_train
    from gradaudit.data import load_splits

    train_split, test_split = load_splits("mnist")
    x, y = train_split.x[:train_size].contiguous(), train_split.y[:train_size].contiguous()
    xq, yq = test_split.x[:queries].contiguous(), test_split.y[:queries].contiguous()
    torch.save({"x": x, "y": y, "xq": xq, "yq": yq}, folder / "data.pt")
    torch.manual_seed(0)
    model = _model()
    for epoch, lr in enumerate(LRS):
        ga_train.fit(model, (x, y), seed=epoch, progress=False, epochs=1, lr=lr, optimizer="sgd", momentum=0.9,
                     batch_size=32)
        torch.save({"state": model.state_dict(), "lr": lr}, folder / f"checkpoint{epoch}.pt")
    return (model(xq).argmax(1) == yq).float().mean().item()


def _load(folder: Path, index: int = len(LRS) - 1) -> nn.Module:
    model = _model()
    model.load_state_dict(torch.load(folder / f"checkpoint{index}.pt", weights_only=True)["state"])
    return model.eval()


def _captum_load(model: nn.Module, path: str) -> float:
    saved = torch.load(path, weights_only=True)
    model.load_state_dict(saved["state"])
    return saved["lr"]


def _kronfluence(strategy: str, model: nn.Module, data: dict, batch: int, out: str):
    """(fit, score) for kronfluence: the true Fisher with labels drawn by inverse CDF from gradaudit's
    uniforms (seed 0, one per training example), its default dtypes, heuristic damping."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    uniforms = torch.rand(len(data["y"]), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            xb, yb, index = batch
            logits = model(xb)
            if sample:
                cdf = torch.softmax(logits.detach().double(), 1).cumsum(1)
                yb = torch.searchsorted(cdf, uniforms[index][:, None]).squeeze(1).clamp(max=logits.shape[1] - 1)
            return F.cross_entropy(logits, yb, reduction="sum")

        def compute_measurement(self, batch, model):
            xb, yb, _ = batch
            return F.cross_entropy(model(xb), yb, reduction="sum")

    train = TensorDataset(data["x"], data["y"], torch.arange(len(data["y"])))
    queries = TensorDataset(data["xq"], data["yq"], torch.arange(len(data["yq"])))
    state = {}

    def fit():
        prepared = prepare_model(copy.deepcopy(model), Classification())
        state["analyzer"] = Analyzer(analysis_name="bench", model=prepared, task=Classification(), output_dir=out,
                                     disable_tqdm=True, disable_model_save=True)
        state["analyzer"].fit_all_factors("factors", dataset=train, per_device_batch_size=batch,
                                          factor_args=FactorArguments(strategy=strategy), overwrite_output_dir=True)

    def score():
        analyzer = state["analyzer"]
        analyzer.compute_pairwise_scores("scores", factors_name="factors", query_dataset=queries,
                                         train_dataset=train, per_device_query_batch_size=len(queries),
                                         per_device_train_batch_size=batch,
                                         score_args=ScoreArguments(damping_factor=None), overwrite_output_dir=True)
        return analyzer.load_pairwise_scores("scores")["all_modules"]

    return fit, score


def make_calls(case: dict, folder: Path, out: str):
    """``(fit, score)``: no-argument callables running one case's two phases (``fit`` may be None);
    ``score`` returns the scores [Q, N], positive = the training example helps."""
    from gradaudit import influence

    name, data, model = case["name"], torch.load(folder / "data.pt", weights_only=True), _load(folder)
    train, queries, n = (data["x"], data["y"]), (data["xq"], data["yq"]), len(data["y"])
    checkpoints = [str(folder / f"checkpoint{i}.pt") for i in range(len(LRS))]
    state = {}
    if name in ("identity", "diagonal", "kfac", "ekfac", "exact"):
        layers, damping = ([case["exact_layer"]], case["exact_damping"]) if name == "exact" else (None, None)

        def fit():
            state["fitted"] = influence.fit(model, train, strategy=name, layers=layers, damping=damping)

        return fit, lambda: state["fitted"].scores(queries, train)
    if name == "tracin":
        pairs = [(_load(folder, i), lr) for i, lr in enumerate(LRS)]
        return None, lambda: influence.tracin(pairs, queries, train)
    if name.startswith("kron-"):
        return _kronfluence(name.removeprefix("kron-"), model, data, case["kron_batch"], out)
    from captum.influence import NaiveInfluenceFunction, TracInCP

    dataset = TensorDataset(*train)
    if name == "captum-tracin":
        def fit():
            state["captum"] = TracInCP(model, dataset, checkpoints, _captum_load, batch_size=case["captum_batch"],
                                       loss_fn=nn.CrossEntropyLoss(reduction="sum"), sample_wise_grads_per_batch=True)

        return fit, lambda: state["captum"].influence(queries)
    size = sum(p.numel() for p in dict(model.named_modules())[case["exact_layer"]].parameters())

    def fit():
        state["captum"] = NaiveInfluenceFunction(
            model, dataset, checkpoints[-1], _captum_load, layers=[case["exact_layer"]],
            loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=case["captum_batch"],
            sample_wise_grads_per_batch=True, projection_dim=size, hessian_reg=n * case["exact_damping"],
            hessian_inverse_tol=0.0)

    return fit, lambda: state["captum"].influence(queries) * n


def _timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call() if call is not None else None
    return time.perf_counter() - start, result


def _run(fit, score) -> tuple[float, float, torch.Tensor]:
    fit_s, _ = _timed(fit)
    score_s, scores = _timed(score)
    return fit_s, score_s, scores


def _quiet() -> None:
    """The peers' deprecation notices (kronfluence's GradScaler, Captum's internals) are not results."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")


def time_cases(cases: list[dict], folder: Path, repeats: int) -> dict:
    """{case name: {"fit", "score": fastest seconds, "check": max |ours - peer| / max |peer|}}, all cases
    timed round-robin in this process (this machine's speed drifts), after one warm-up run each."""
    results, scores = {}, {}
    with tempfile.TemporaryDirectory() as out:
        calls = {case["name"]: make_calls(case, folder, out) for case in cases}
        for name, (fit, score) in calls.items():
            scores[name] = _run(fit, score)[2].detach().double()
            results[name] = {"fit": [], "score": []}
        for _ in range(repeats):
            for name, (fit, score) in calls.items():
                fit_s, score_s, _ = _run(fit, score)
                results[name]["fit"].append(fit_s)
                results[name]["score"].append(score_s)
    out = {name: {"fit": min(r["fit"]) if calls[name][0] is not None else None, "score": min(r["score"])}
           for name, r in results.items()}
    for ours, peer, _ in PAIRS.values():
        if ours in scores and peer in scores:
            out[peer]["check"] = float((scores[ours] - scores[peer]).abs().max() / scores[peer].abs().max())
    return out


def run_case(case: dict, folder: Path) -> dict:
    """Peak RSS (MB above the RSS before) of one fit + score of ``case``, alone in this process."""
    with tempfile.TemporaryDirectory() as out:
        fit, score = make_calls(case, folder, out)
        _run(fit, score)                                   # warm-up
        idle = reset_peak()
        _run(fit, score)
        return {"peak_mb": status_mb("VmHWM") - idle}


def _load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="300 digits, 20 queries, 1 repeat")
    parser.add_argument("--train", type=int, default=1000, help="training digits")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (3; --quick: 1)")
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--exact-layer", default="conv1", help="the layer exact and Captum's Naive run on")
    parser.add_argument("--exact-damping", type=float, default=1e-3, help="exact's damping (Captum's: N x it)")
    parser.add_argument("--kron-batch", type=int, default=256, help="kronfluence's per-device batch size")
    parser.add_argument("--captum-batch", type=int, default=256, help="Captum's training batch size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _quiet()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case), Path(args.folder))))
        return
    if args.cases:
        spec = json.loads(args.cases)
        print(json.dumps(time_cases(spec["cases"], Path(args.folder), spec["repeats"])))
        return
    if args.quick:
        args.train, args.queries = 300, 20
    args.repeats = args.repeats or (1 if args.quick else 3)
    print(f"load before: {_load_average()}")
    with tempfile.TemporaryDirectory() as folder:
        accuracy = prepare(Path(folder), args.train, args.queries)
        pairs = args.pairs.split(",")
        base = {"exact_layer": args.exact_layer, "exact_damping": args.exact_damping,
                "kron_batch": args.kron_batch, "captum_batch": args.captum_batch}
        cases = [{**base, "name": name} for pair in pairs for name in PAIRS[pair][:2]]
        common = ["--folder", folder, "--threads", str(args.threads)]
        times = in_fresh_process(__file__, ["--cases", json.dumps({"cases": cases, "repeats": args.repeats}),
                                            *common]) or {}
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        memory = {case["name"]: (in_fresh_process(__file__, ["--case", json.dumps(case), *common], env) or {}).get(
            "peak_mb", float("nan")) for case in cases}
    print(f"small_cnn width {WIDTH} ({sum(p.numel() for p in _model().parameters())} weights), "
          f"{args.train} MNIST digits, {args.queries} queries, query accuracy {accuracy:.2f}, "
          f"{args.threads} threads, fastest of {args.repeats}; seconds (lower is better), peak MB above idle")
    header = (f"{'pair':9} {'peer':16} {'ga fit':>7} {'ga score':>8} {'ga total':>8} {'peer fit':>8} "
              f"{'peer score':>10} {'peer total':>10} {'peer/ga':>7} {'ga MB':>7} {'peer MB':>7} {'check':>8}")
    print(header)
    print("-" * len(header))
    nan = {"fit": float("nan"), "score": float("nan"), "check": float("nan")}
    for pair in pairs:
        ours_name, peer_name, label = PAIRS[pair]
        ours, peer = times.get(ours_name, nan), times.get(peer_name, nan)
        ours_total, peer_total = (ours["fit"] or 0.0) + ours["score"], (peer["fit"] or 0.0) + peer["score"]
        ours_fit = "-" if ours["fit"] is None else f"{ours['fit']:.2f}"
        print(f"{pair:9} {label:16} {ours_fit:>7} {ours['score']:8.2f} {ours_total:8.2f} {peer['fit']:8.2f} "
              f"{peer['score']:10.2f} {peer_total:10.2f} {peer_total / ours_total:6.2f}x "
              f"{memory[ours_name]:7.0f} {memory[peer_name]:7.0f} {peer.get('check', float('nan')):8.1e}")
    print(f"exact and Captum Naive on {args.exact_layer} only (damping {args.exact_damping:g}); "
          f"kronfluence batch {args.kron_batch}, Captum batch {args.captum_batch}")
    print(f"load after: {_load_average()}")


if __name__ == "__main__":
    main()
