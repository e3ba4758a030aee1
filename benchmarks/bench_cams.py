"""ScoreCAM speed and memory: gradaudit vs pytorch-grad-cam 1.5.7 vs the floor, on CPU.

    python benchmarks/bench_cams.py            # both models, 3 repeats (about two minutes on 2 CPU cores)
    python benchmarks/bench_cams.py --quick    # 1 repeat

For each model it prints ms/image of: gradaudit's ``ScoreCAM`` with its defaults (as many masked inputs per pass
as the memory budget allows without gradients) and with grad-cam's 16 per pass (``masks_per_pass=16``),
grad-cam's ``ScoreCAM`` with its default ``batch_size`` 16, and two floors: one forward + backward of the batch
(what a gradient CAM costs), and the C + 1 forwards per image ScoreCAM needs (the clean one and one per channel
mask), run 16 at a time without gradients on inputs prepared beforehand. Times are CPU time (the process's user +
system time over all its threads, ``time.process_time``), which other load on a shared machine changes less
than wall time: all cases of one model in one subprocess, round-robin over the repeats, fastest repeat each.
Peak memory: each case alone in its own subprocess, the peak RSS during one call above the RSS before it (after a
warm-up call; ``peak_memory.py``).
The maps of both are compared: max |difference| after scaling each to [0, 1] (grad-cam scales, then resizes
with cv2; we resize, then scale here), so small but not 0.

grad-cam's package ``__init__`` imports torchvision (not installable beside our torch): its modules are loaded
by path, with a stub torchvision while ``utils/image.py`` and ``utils/model_targets.py`` import (as in
``tests/test_cam_family.py``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import types

import torch
from peak_memory import reset_peak, status_mb

import gradaudit as ga
from gradaudit import models

MODELS = {
    # name: (builder, per-example input shape, images per call, layer)
    "cnn": (lambda: models.small_cnn(in_shape=(1, 28, 28)), (1, 28, 28), 16, "conv2"),
    "resnet": (lambda: models.resnet18(), (3, 64, 64), 2, "layer2"),
}
CASES = ("gradaudit", "gradaudit, 16 per pass", "grad-cam", "floor: forward+backward", "floor: C+1 forwards")


def grad_cam_score_cam():
    """pytorch_grad_cam.score_cam.ScoreCAM, loaded without the package ``__init__`` (see the docstring)."""
    root = importlib.util.find_spec("pytorch_grad_cam").submodule_search_locations[0]
    for name, path in (("pytorch_grad_cam", root), ("pytorch_grad_cam.utils", f"{root}/utils")):
        package = types.ModuleType(name)
        package.__path__ = [path]
        sys.modules[name] = package
    stub, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    transforms.Compose = transforms.Normalize = transforms.ToTensor = None
    stub.transforms = transforms
    sys.modules.update({"torchvision": stub, "torchvision.transforms": transforms})
    try:
        return importlib.import_module("pytorch_grad_cam.score_cam").ScoreCAM
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.transforms"]


def build(name: str):
    builder, shape, images, layer = MODELS[name]
    torch.manual_seed(0)
    model = builder().eval()
    x = torch.rand(images, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target, layer


def channels(model, x, layer) -> int:
    return ga.EigenCAM(layer, upsample=False)._activations(model, x[:1], 1).shape[1]


def make_call(case: str, model, x, target, layer):
    """A function of no arguments running ``case`` once on the whole batch, returning its map (or None)."""
    if case.startswith("gradaudit"):
        method = ga.ScoreCAM(layer, masks_per_pass=16 if "16" in case else None)
        return lambda: method(model, x, target)
    if case == "grad-cam":
        os.environ["TQDM_DISABLE"] = "1"
        module = dict(model.named_modules())[layer]
        cam = grad_cam_score_cam()(model=model, target_layers=[module])
        targets = [lambda o, c=int(c): o[c] for c in target]
        return lambda: torch.from_numpy(cam(input_tensor=x, targets=targets))
    if case == "floor: forward+backward":
        def call():
            leaf = x.detach().requires_grad_(True)
            out = model(leaf)
            torch.autograd.grad(out.gather(1, target[:, None]).sum(), leaf)
        return call
    masked = x.repeat_interleave(channels(model, x, layer) + 1, 0)       # the inputs, made before the clock starts

    def forwards():
        with torch.inference_mode():
            for start in range(0, len(masked), 16):
                model(masked[start:start + 16])
    return forwards


def scaled(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1) - maps.flatten(1).amin(1, keepdim=True)
    return (flat / (flat.amax(1, keepdim=True) + 1e-7)).view_as(maps)


def time_model(name: str, repeats: int) -> dict:
    model, x, target, layer = build(name)
    calls = {case: make_call(case, model, x, target, layer) for case in CASES}
    maps = {case: calls[case]() for case in ("gradaudit", "grad-cam")}        # warm-up, and the maps compared
    best = dict.fromkeys(CASES, float("inf"))
    for _ in range(repeats):
        for case, call in calls.items():
            start = time.process_time()
            call()
            best[case] = min(best[case], time.process_time() - start)
    difference = (scaled(maps["gradaudit"].double()) - maps["grad-cam"].double()).abs().max().item()
    return {"ms": {case: 1000 * t / len(x) for case, t in best.items()}, "difference": difference,
            "channels": channels(model, x, layer), "images": len(x), "layer": layer}


def peak_case(name: str, case: str) -> float:
    model, x, target, layer = build(name)
    call = make_call(case, model, x, target, layer)
    call()
    before = reset_peak()
    call()
    return status_mb("VmHWM") - before


def run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--time", help=argparse.SUPPRESS)
    parser.add_argument("--peak", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time:
        print(json.dumps(time_model(args.time, 1 if args.quick else 3)))
        return
    if args.peak:
        print(json.dumps(peak_case(*args.peak)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for name in MODELS:
        timed = run(["--time", name] + (["--quick"] if args.quick else []))
        print(f"\n{name}: ScoreCAM at {timed['layer']} ({timed['channels']} channels), {timed['images']} images; "
              f"max |difference| of the [0, 1] maps, gradaudit vs grad-cam: {timed['difference']:.1e}")
        print(f"{'case':<26}{'CPU ms/image':>13}{'x floor (f+b)':>15}{'peak MB':>9}")
        floor = timed["ms"]["floor: forward+backward"]
        for case in CASES:
            peak = run(["--peak", name, case])
            print(f"{case:<26}{timed['ms'][case]:>13.1f}{timed['ms'][case] / floor:>15.1f}{peak:>9.1f}")
        ratio = timed["ms"]["gradaudit"] / timed["ms"]["grad-cam"]
        print(f"gradaudit / grad-cam time: {ratio:.2f}")


if __name__ == "__main__":
    main()
