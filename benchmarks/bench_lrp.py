"""LRP speed and memory: gradaudit's ``ga.LRP`` vs zennit 0.5.1 vs the floor, on the same CNN and batch.

    python benchmarks/bench_lrp.py            # small CNN (1x28x28, batch 64) and ResNet-18 (3x64x64, batch 16)
    python benchmarks/bench_lrp.py --quick    # fewer repeats, EpsilonPlus only
    python benchmarks/bench_lrp.py --threads 1   # torch threads (default: torch's)

For each model and composite it prints the ms per batch and the peak memory of
- floor: one forward + backward of the target logits with respect to the input, parameters frozen (as
  gradaudit runs every gradient method);
- gradaudit: ``ga.LRP(composite)(model, x, target, batch_size=B)``, all of it (checks, rule plan, the pass);
- zennit: ``Gradient(model, composite with SequentialMergeBatchNorm)`` entered (canonizer, hooks), called once
  with the one-hot * logit output relevance, and left, per batch.
Times: CPU time of the process on CPU (user + system over its threads, ``time.process_time``: other load on a
shared machine changes it less than wall time), wall time on CUDA; the cases of one model round-robin in one
process, fastest of the repeats (40 for the small CNN, 7 for the ResNet). Peak memory: each case alone in a
subprocess after a warm-up call, the peak RSS during one call above the RSS before it (glibc returning
allocations over 64 KiB at once), or the CUDA peak allocation.
On the ResNet zennit takes the gradient of the residual additions (its ResNet canonizer needs torchvision,
which does not install here); that is the same work as its Sum rule, not the same relevance.
zennit's ``__init__`` imports torchvision: its submodules are loaded under a bare package, as the tests do.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import types

import torch
import torch.nn.functional as F
from peak_memory import in_fresh_process, reset_peak, status_mb

import gradaudit as ga
from gradaudit import models

MODELS = {   # name: (builder, per-example input shape, batch, repeats: more where a call is short, so the fastest
    # repeat finds a quiet moment of a shared machine)
    "cnn": (lambda: models.small_cnn((1, 28, 28), 10), (1, 28, 28), 64, 40),
    "resnet18": (lambda: models.resnet18(), (3, 64, 64), 16, 7),
}
COMPOSITES = ("EpsilonPlus", "EpsilonAlpha2Beta1", "EpsilonGammaBox")
BOX = {"low": -3.0, "high": 3.0}


def zennit():
    if "zennit" not in sys.modules:
        spec = importlib.util.find_spec("zennit")
        package = types.ModuleType("zennit")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["zennit"] = package
    from zennit import attribution, canonizers, composites
    return attribution, canonizers, composites


def build(name: str, device: str):
    builder, shape, batch, _ = MODELS[name]
    torch.manual_seed(0)
    model = builder().to(device).eval()
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1)).to(device)
    return model, x, torch.arange(batch, device=device) % 10


def make_call(case: dict, model, x, target):
    impl, composite = case["impl"], case["composite"]
    settings = BOX if composite == "EpsilonGammaBox" else {}
    if impl == "floor":
        for p in model.parameters():
            p.requires_grad_(False)

        def floor():
            leaf = x.detach().requires_grad_(True)
            torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf)

        return floor
    if impl == "gradaudit":
        method = ga.LRP(composite, **settings)
        return lambda: method(model, x, target, batch_size=len(x))
    attribution, canonizers, composites = zennit()

    def theirs():
        made = getattr(composites, composite)(canonizers=[canonizers.SequentialMergeBatchNorm()], **settings)
        with attribution.Gradient(model=model, composite=made) as attributor:
            attributor(x, lambda out: F.one_hot(target, out.shape[1]).to(out) * out)

    return theirs


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(call, device) -> float:
    """Seconds of one call: wall time on CUDA, CPU time of this process (all its threads) on CPU, which other
    load on a shared machine changes less than wall time."""
    clock = time.perf_counter if device == "cuda" else time.process_time
    start = clock()
    call()
    _sync(device)
    return clock() - start


def time_cases(cases: list[dict]) -> list[float]:
    """ms per batch of each case (one model), round-robin over the repeats in this process, fastest repeat."""
    torch.set_num_threads(cases[0]["threads"])
    device = cases[0]["device"]
    model, x, target = build(cases[0]["model"], device)
    calls = [make_call(case, model, x, target) for case in cases]
    for call in calls:
        call()
    times = [[] for _ in calls]
    for _ in range(cases[0]["repeats"]):
        for spent, call in zip(times, calls, strict=True):
            spent.append(_timed(call, device))
    return [1000 * min(spent) for spent in times]


def peak_case(case: dict) -> float:
    """Peak memory (MB) of one call of ``case``, alone in this process, after a warm-up call."""
    torch.set_num_threads(case["threads"])
    device = case["device"]
    model, x, target = build(case["model"], device)
    call = make_call(case, model, x, target)
    call()
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    idle = reset_peak()
    call()
    _sync(device)
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else status_mb("VmHWM") - idle


def table(name: str, composites, device: str, quick: bool, threads: int) -> None:
    _, shape, batch, repeats = MODELS[name]
    repeats = max(3, repeats // 4) if quick else repeats
    cases = [{"model": name, "device": device, "repeats": repeats, "threads": threads, "impl": "floor",
              "composite": "EpsilonPlus"}]
    for composite in composites:
        cases += [{**cases[0], "impl": impl, "composite": composite} for impl in ("gradaudit", "zennit")]
    times = in_fresh_process(__file__, ["--cases", json.dumps(cases)]) or [float("nan")] * len(cases)
    print(f"\n{name}: input {list(shape)}, batch {batch}, {device}, fastest of {repeats} repeats")
    header = f"{'case':34} {'ms/batch':>9} {'x floor':>8} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for case, ms in zip(cases, times, strict=True):
        label = "floor: forward + backward" if case["impl"] == "floor" else f"{case['impl']} {case['composite']}"
        memory = in_fresh_process(__file__, ["--peak", json.dumps(case)], env)
        print(f"{label:34} {ms:9.1f} {ms / times[0]:7.2f}x {memory if memory is not None else float('nan'):8.1f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    parser.add_argument("--peak", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cases:
        print(json.dumps(time_cases(json.loads(args.cases))))
        return
    if args.peak:
        print(json.dumps(peak_case(json.loads(args.peak))))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, {args.threads} threads, device {device}; load average (1, 5, 15 min) "
          f"{os.getloadavg()}")
    for name in args.models.split(","):
        table(name, ("EpsilonPlus",) if args.quick else COMPOSITES, device, args.quick, args.threads)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
