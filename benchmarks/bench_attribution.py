"""Attribution speed and memory: gradaudit defaults vs Captum vs the bare forward+backward floor.

    python benchmarks/bench_attribution.py            # full table (a few minutes on 2 CPU cores)
    python benchmarks/bench_attribution.py --quick    # fewer batch sizes and repeats

For each model and multi-sample method it prints ms/image for: gradaudit with default settings,
Captum with its defaults, Captum with its best hand-tuned internal batch, and the floor: the
method's number of forward+backward passes at the best batch size (swept over 1..256 rows).
Every case runs in its own subprocess; peak memory is the peak RSS during the timed calls above
the RSS before them (after a warm-up call), or the CUDA peak allocation. With a GPU the same script runs on CUDA.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

import torch
from torch import nn

SAMPLES = 50
MODELS = {
    # name: (builder, per-example input shape, images per call, layer for CAM methods)
    "cnn": ("small_cnn", (1, 56, 28), 16, "conv2"),
    "mlp": ("wide_mlp", (1, 28, 28), 16, None),
    "resnet": ("resnet18", (3, 64, 64), 2, "layer4"),
}


def build(name: str, device: str) -> tuple[nn.Module, torch.Tensor]:
    from gradaudit import models

    builder, shape, images, _ = MODELS[name]
    torch.manual_seed(0)
    model = {
        "small_cnn": lambda: models.small_cnn(shape, 2),
        "wide_mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                                          nn.ReLU(), nn.Linear(4096, 10)),
        "resnet18": lambda: models.resnet18(),
    }[builder]().to(device).eval()
    return model, torch.rand(images, *shape, device=device)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> float:
    """Reset the process's peak RSS (Linux clear_refs) and return the current RSS in MB."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_mb("VmRSS")


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run_case(case: dict) -> dict:
    """Time one (model, method, implementation, setting) in this process."""
    import gradaudit as ga

    torch.set_num_threads(case["threads"])
    device = case["device"]
    model, x = build(case["model"], device)
    target = torch.zeros(len(x), dtype=torch.long, device=device)
    kind, impl, setting = case["method"], case["impl"], case.get("setting")
    steps = case.get("steps", SAMPLES)
    if impl == "gradaudit":
        method = {"ig": lambda: ga.IntegratedGradients(steps=steps),
                  "smoothgrad": lambda: ga.SmoothGrad(ga.Saliency(abs=False), samples=SAMPLES, sigma=0.15),
                  "smoothgradcampp": lambda: ga.SmoothGradCAMPlusPlus(MODELS[case["model"]][3], samples=SAMPLES, sigma=0.15),
                  }[kind]()
        call = lambda: method(model, x, target, batch_size=setting)  # noqa: E731
    elif impl == "captum":
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

        if kind == "ig":
            explainer = IntegratedGradients(model)
            call = lambda: explainer.attribute(x, target=target, n_steps=steps, internal_batch_size=setting)  # noqa: E731
        else:
            explainer = NoiseTunnel(Saliency(model))
            call = lambda: explainer.attribute(x, target=target, nt_type="smoothgrad", nt_samples=SAMPLES,  # noqa: E731
                                               stdevs=0.15, nt_samples_batch_size=setting, abs=False)
    else:  # the floor: bare forward + backward of `setting` rows, scaled to the method's row count
        for p in model.parameters():
            p.requires_grad_(False)
        rows = torch.rand(setting, *x.shape[1:], device=device)

        def call():
            leaf = rows.clone().requires_grad_(True)
            torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)

    call()                                                     # warm-up
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    idle = _reset_peak()
    times = []
    for _ in range(case["repeats"]):
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = min(times)          # the least-disturbed run: this machine's timings drift between runs
    if impl == "floor":
        seconds = seconds / setting * len(x) * steps          # per call of the method
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _status_mb("VmHWM") - idle
    return {"ms_per_image": 1000 * seconds / len(x), "peak_mb": peak}


def measure(case: dict) -> dict:
    """Run ``case`` in a fresh subprocess and return its measurements."""
    out = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"ms_per_image": float("nan"), "peak_mb": float("nan"), "error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(cases: list[dict]) -> tuple[dict, dict]:
    results = [(measure(c), c) for c in cases]
    return min(results, key=lambda rc: rc[0]["ms_per_image"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and repeats")
    parser.add_argument("--models", default="cnn,mlp,resnet")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [1, 4, 16, 64, 256] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    print(f"device {device}, {args.threads} threads, {SAMPLES} samples/steps; ms per image (lower is better)\n")
    header = (f"{'model':7} {'method':16} {'gradaudit':>10} {'captum':>9} {'captum best':>13} {'floor':>8} "
              f"{'ga/floor':>8} {'captum/ga':>9} {'best/ga':>8} {'ga MB':>7} {'captum MB':>9}")
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        images = MODELS[name][2]
        repeats = 2 if name == "resnet" or args.quick else 5
        base = {"model": name, "device": device, "threads": args.threads, "repeats": repeats}
        floor, floor_case = best([{**base, "method": "ig", "impl": "floor", "setting": s} for s in sizes])
        methods = ["ig", "smoothgrad"] + (["smoothgradcampp"] if MODELS[name][3] else [])
        for method in methods:
            ours = measure({**base, "method": method, "impl": "gradaudit"})
            line = f"{name:7} {method:16} {ours['ms_per_image']:10.2f} "
            if method == "smoothgradcampp":
                line += f"{'-':>9} {'-':>13} {floor['ms_per_image']:8.2f} {ours['ms_per_image'] / floor['ms_per_image']:8.2f}x"
                print(line + f" {'-':>9} {'-':>8} {ours['peak_mb']:7.0f} {'-':>9}", flush=True)
                continue
            theirs = measure({**base, "method": method, "impl": "captum"})
            tuned, tuned_case = best([{**base, "method": method, "impl": "captum", "setting": s}
                                      for s in sizes if s <= images * SAMPLES])
            line += (f"{theirs['ms_per_image']:9.2f} {tuned['ms_per_image']:8.2f} (b{tuned_case['setting']:<3}) "
                     f"{floor['ms_per_image']:8.2f} {ours['ms_per_image'] / floor['ms_per_image']:7.2f}x "
                     f"{theirs['ms_per_image'] / ours['ms_per_image']:8.2f}x {tuned['ms_per_image'] / ours['ms_per_image']:7.2f}x "
                     f"{ours['peak_mb']:7.0f} {theirs['peak_mb']:9.0f}")
            print(line, flush=True)
        print(f"{'':7} floor: best batch {floor_case['setting']} rows")
    print("\nPeak memory of IntegratedGradients as steps grow (gradaudit defaults, cnn):")
    for steps in (20, 200):
        r = measure({"model": "cnn", "device": device, "threads": args.threads, "repeats": 1, "method": "ig",
                     "impl": "gradaudit", "steps": steps})
        c = measure({"model": "cnn", "device": device, "threads": args.threads, "repeats": 1, "method": "ig",
                     "impl": "captum", "steps": steps})
        print(f"  steps {steps:4d}: gradaudit {r['peak_mb']:7.1f} MB ({r['ms_per_image']:.1f} ms/image)   "
              f"captum default {c['peak_mb']:7.1f} MB")


if __name__ == "__main__":
    main()
