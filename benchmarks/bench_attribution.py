"""Attribution speed and memory: gradaudit defaults vs Captum vs the bare forward+backward floor.

    python benchmarks/bench_attribution.py            # full table (a few minutes on 2 CPU cores)
    python benchmarks/bench_attribution.py --quick    # fewer batch sizes and repeats
    python benchmarks/bench_attribution.py --models vit [--quick]   # the ViT table (below) alone

For each model and method (IG, SmoothGrad, SmoothGrad-CAM++, DeepLIFT, GradientSHAP with 8 reference
inputs) it prints ms/image for: gradaudit with default settings,
Captum with its defaults, Captum with its best hand-tuned internal batch, and the floor: the
method's number of forward+backward passes at the best batch size (swept over 1..256 rows).
Times: all cases of one model run in one subprocess, round-robin over the repeats (this machine's
speed drifts by up to 1.5x between processes), fastest repeat each. Peak memory: each case alone
in its own subprocess, the peak RSS during one call above the RSS before it (after a warm-up
call; large allocations returned to the system at once), or the CUDA peak allocation. With a GPU
the same script runs on CUDA. Captum's DeepLift and GradientShap have no internal batch size to
tune; DeepLIFT's floor is two passes per image (the input and its reference).

``--models vit`` (not in the default run): a Hugging Face ViT of the ViT-Tiny shape (12 blocks, width
192, 3 heads, MLP 768, patch 16, 224x224 input, random weights, nothing downloaded) wrapped to return
its logits. ms/image (median of the repeats, round-robin in one subprocess) and peak memory of Grad-CAM
at the last block's first LayerNorm, AttentionRollout, GradientRollout and AttnLRP against the floor
(one forward + backward of the logit with respect to the input, with the model's own sdpa attention and
with eager attention, which the attention methods switch to; and a forward alone, the floor of methods
that need no gradient or only one reaching the last block) and Captum's LayerGradCam. Captum's
LayerGradCam takes dimension 1 as channels and averages the gradient over the others, so on a token
layer [B, T, C] it weights tokens, not channels, and returns [B, 1, C]; the benchmark gives it a copy
of the model whose LayerNorm is wrapped to pass its patch tokens through a [B, C, 14, 14] view
(pytorch-grad-cam's reshape_transform, inside the model) and hands Captum that view. The Grad-CAM maps
of both are compared on the same images (max abs difference after upsampling to 224x224).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
import warnings

import torch
from peak_memory import in_fresh_process, reset_peak, status_mb
from torch import nn

SAMPLES = 50
PASSES = {"deeplift": 2}            # forward+backward passes per image (default: SAMPLES)
MODELS = {
    # name: (builder, per-example input shape, images per call, layer for CAM methods)
    "cnn": ("small_cnn", (1, 56, 28), 16, "conv2"),
    "mlp": ("wide_mlp", (1, 28, 28), 16, None),
    "resnet": ("resnet18", (3, 64, 64), 2, "layer4"),
    "vit": ("vit_tiny", (3, 224, 224), 8, "model.vit.layers.11.layernorm_before"),
}
VIT_METHODS = {   # gradaudit's methods on the ViT, by case method name
    "gradcam": "GradCAM", "rollout": "AttentionRollout", "gradientrollout": "GradientRollout", "attnlrp": "AttnLRP",
}


class Logits(nn.Module):
    """A Hugging Face image classifier returning its logits [B, classes] (gradaudit and Captum explain tensors)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


class TokenGrid(nn.Module):
    """A token-layer module (output [B, 1 + h*w, C], class token first) whose patch tokens pass through
    ``grid``, a module returning them as a channels-first map [B, C, h, w]: the layer Captum's
    LayerGradCam can read. The output is the wrapped module's, unchanged."""

    def __init__(self, tokens: nn.Module):
        super().__init__()
        self.tokens = tokens
        self.grid = ToGrid()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.tokens(hidden)
        grid = self.grid(out[:, 1:])
        return torch.cat([out[:, :1], grid.flatten(2).transpose(1, 2)], 1)


class ToGrid(nn.Module):
    """Square patch tokens [B, h*w, C] -> [B, C, h, w]."""

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        side = round(patches.shape[1] ** 0.5)
        return patches.transpose(1, 2).reshape(len(patches), patches.shape[2], side, side)


def build(name: str, device: str, images: int | None = None) -> tuple[nn.Module, torch.Tensor]:
    """The model and a batch of ``images`` inputs (default: the model's images per call)."""
    from gradaudit import models

    builder, shape, default, _ = MODELS[name]
    torch.manual_seed(0)
    model = {
        "small_cnn": lambda: models.small_cnn(shape, 2),
        "wide_mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                                          nn.ReLU(), nn.Linear(4096, 10)),
        "resnet18": lambda: models.resnet18(),
        "vit_tiny": vit_tiny,
    }[builder]().to(device).eval()
    return model, torch.rand(images or default, *shape, device=device)


def vit_tiny() -> nn.Module:
    """ViT-Tiny's shape with random weights, 1000 classes, wrapped to return logits."""
    import transformers

    config = transformers.ViTConfig(image_size=224, patch_size=16, hidden_size=192, num_hidden_layers=12,
                                    num_attention_heads=3, intermediate_size=768, num_labels=1000)
    vit = transformers.ViTForImageClassification(config)
    nn.init.normal_(vit.classifier.weight, std=0.02)    # a zero-initialised head (torchvision's) has zero gradients
    return Logits(vit)


def captum_token_gradcam(model: nn.Module, layer: str):
    """Captum's LayerGradCam at the token layer ``layer`` of a copy of ``model``, read through a
    [B, C, h, w] view of its patch tokens (``TokenGrid``): ``(x, target) -> [B, H, W]`` maps,
    upsampled bilinearly to the input's size as gradaudit's."""
    from captum.attr import LayerAttribution, LayerGradCam

    model = copy.deepcopy(model)
    parent, _, child = layer.rpartition(".")
    wrapped = TokenGrid(model.get_submodule(layer))
    setattr(model.get_submodule(parent), child, wrapped)
    explainer = LayerGradCam(model, wrapped.grid)

    def explain(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        grid = explainer.attribute(x, target=target, relu_attributions=True)       # [B, 1, h, w]
        return LayerAttribution.interpolate(grid, tuple(x.shape[2:]), "bilinear").squeeze(1)

    return explain




def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def make_call(case: dict, model: nn.Module, x: torch.Tensor):
    """``(call, rows_scale)``: a no-argument callable running ``case`` once, and the factor that
    turns its time into the time of one call of the method (only the floor needs one)."""
    import gradaudit as ga

    device = case["device"]
    target = torch.zeros(len(x), dtype=torch.long, device=device)
    kind, impl, setting = case["method"], case["impl"], case.get("setting")
    steps = case.get("steps", SAMPLES)
    if impl == "gradaudit":
        method = {"ig": lambda: ga.IntegratedGradients(steps=steps),
                  "smoothgrad": lambda: ga.SmoothGrad(ga.Saliency(abs=False), samples=SAMPLES, sigma=0.15),
                  "smoothgradcampp": lambda: ga.SmoothGradCAMPlusPlus(MODELS[case["model"]][3], samples=SAMPLES,
                                                                      sigma=0.15),
                  "deeplift": lambda: ga.DeepLift(),
                  "gradientshap": lambda: ga.GradientShap(baselines=_references(x), samples=SAMPLES),
                  "gradcam": lambda: ga.GradCAM(MODELS[case["model"]][3]),
                  "rollout": lambda: ga.AttentionRollout(),
                  "gradientrollout": lambda: ga.GradientRollout(),
                  "attnlrp": lambda: ga.AttnLRP(),
                  }[kind]()
        return (lambda: method(model, x, target, batch_size=setting)), 1.0
    if impl == "captum" and kind == "gradcam":
        explain = captum_token_gradcam(model, MODELS[case["model"]][3])
        return (lambda: explain(x, target)), 1.0
    if impl == "captum":
        from captum.attr import DeepLift, GradientShap, IntegratedGradients, NoiseTunnel, Saliency

        if kind == "deeplift":
            explainer = DeepLift(model)
            return (lambda: explainer.attribute(x, baselines=torch.zeros_like(x), target=target)), 1.0
        if kind == "gradientshap":
            explainer, references = GradientShap(model), _references(x)
            return (lambda: explainer.attribute(x, baselines=references, n_samples=SAMPLES, target=target)), 1.0
        if kind == "ig":
            explainer = IntegratedGradients(model)
            return (lambda: explainer.attribute(x, target=target, n_steps=steps, internal_batch_size=setting)), 1.0
        explainer = NoiseTunnel(Saliency(model))
        return (lambda: explainer.attribute(x, target=target, nt_type="smoothgrad", nt_samples=SAMPLES, stdevs=0.15,
                                            nt_samples_batch_size=setting, abs=False)), 1.0
    # the floor: bare forward + backward of `setting` rows, on a frozen copy of the model
    frozen, _ = build(case["model"], device)
    for p in frozen.parameters():
        p.requires_grad_(False)
    if case.get("attention"):
        frozen.model.set_attn_implementation(case["attention"])
    rows = torch.rand(setting, *x.shape[1:], device=device)

    def call():
        leaf = rows.clone().requires_grad_(True)
        torch.autograd.grad(frozen(leaf)[:, 0].sum(), leaf)

    def forward():
        with torch.no_grad():
            frozen(rows)

    return (forward if case.get("forward_only") else call), len(x) * steps / setting


def _references(x: torch.Tensor) -> torch.Tensor:
    """Eight fixed reference inputs for GradientSHAP."""
    return torch.rand(8, *x.shape[1:], generator=torch.Generator().manual_seed(1)).to(x.device)


def _timed(call, device) -> float:
    start = time.perf_counter()
    call()
    _sync(device)
    return time.perf_counter() - start


def run_case(case: dict) -> dict:
    """Peak memory (and time) of one case, alone in this process."""
    torch.set_num_threads(case["threads"])
    device = case["device"]
    model, x = build(case["model"], device, case.get("images"))
    call, scale = make_call(case, model, x)
    call()                                                     # warm-up
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    idle = reset_peak()
    seconds = min(_timed(call, device) for _ in range(case["repeats"])) * scale
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else status_mb("VmHWM") - idle
    return {"ms_per_image": 1000 * seconds / len(x), "peak_mb": peak}


def time_cases(cases: list[dict]) -> list[float]:
    """ms/image of each case (same model), timed round-robin in this process: this machine's
    speed drifts by up to 1.5x between processes and over minutes, so the cases of one
    comparison share every repeat. Each case's time is its fastest repeat (the median where
    the cases say ``"median": true``)."""
    torch.set_num_threads(cases[0]["threads"])
    device = cases[0]["device"]
    model, x = build(cases[0]["model"], device, cases[0].get("images"))
    calls = [make_call(case, model, x) for case in cases]
    for call, _ in calls:
        call()
    times = [[] for _ in calls]
    for _ in range(cases[0]["repeats"]):
        for spent, (call, scale) in zip(times, calls, strict=False):
            spent.append(_timed(call, device) * scale)
    pick = statistics.median if cases[0].get("median") else min
    return [1000 * pick(spent) / len(x) for spent in times]


def measure(case: dict) -> dict:
    """Peak memory of ``case`` alone in a fresh subprocess. glibc there hands every allocation
    over 64 KiB straight back to the system when freed (MALLOC_MMAP_THRESHOLD_), so the peak RSS
    follows live tensors instead of the allocator's caching (which made it vary 2x between runs).
    That slows the process, so its times are not used."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    return (in_fresh_process(__file__, ["--case", json.dumps(case)], env)
            or {"ms_per_image": float("nan"), "peak_mb": float("nan")})


def vit_table(device: str, threads: int, quick: bool) -> None:
    """The ViT rows: each case's median ms/image over the repeats (round-robin in one subprocess), its
    peak memory (alone in a subprocess), and the agreement of gradaudit's Grad-CAM with Captum's."""
    images, repeats = (4, 3) if quick else (8, 5)
    base = {"model": "vit", "device": device, "threads": threads, "repeats": repeats, "images": images,
            "median": True}
    floor = {**base, "method": "floor", "impl": "floor", "setting": images, "steps": 1}
    rows = [("floor: forward+backward (sdpa)", floor),
            ("floor: forward+backward (eager)", {**floor, "attention": "eager"}),
            ("forward only (sdpa, no_grad)", {**floor, "forward_only": True})]
    rows += [(f"gradaudit {label}", {**base, "method": kind, "impl": "gradaudit"})
             for kind, label in VIT_METHODS.items()]
    rows += [("captum LayerGradCam (grid view)", {**base, "method": "gradcam", "impl": "captum"})]
    print(f"\nvit: ViT-Tiny shape (12 blocks, width 192, 3 heads, MLP 768, patch 16, 224x224, random weights), "
          f"{images} images/call, median of {repeats} repeats; Grad-CAM at {MODELS['vit'][3]}")
    print(f"load average before (1, 5, 15 min): {_load()}")
    cases = [case for _, case in rows]
    measured = in_fresh_process(__file__, ["--cases", json.dumps(cases)]) or [float("nan")] * len(cases)
    header = f"{'method':34} {'ms/image':>9} {'x floor':>8} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    for (label, case), ms in zip(rows, measured, strict=True):
        memory = measure({**case, "repeats": 1})["peak_mb"]
        print(f"{label:34} {ms:9.1f} {ms / measured[0]:7.2f}x {memory:8.0f}", flush=True)
    for line in vit_agreement(device, images):
        print(line)
    print(f"load average after (1, 5, 15 min): {_load()}")


def vit_agreement(device: str, images: int) -> list[str]:
    """gradaudit's Grad-CAM maps vs Captum's through the grid view on the same images, Grad-CAM("auto")
    vs the explicit layer, and what Captum's LayerGradCam returns on the token layer itself."""
    from captum.attr import LayerGradCam

    import gradaudit as ga

    model, x = build("vit", device, images)
    layer = MODELS["vit"][3]
    target = torch.zeros(len(x), dtype=torch.long, device=device)
    ours = ga.GradCAM(layer)(model, x, target)
    theirs = captum_token_gradcam(model, layer)(x, target)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        auto = ga.GradCAM("auto")(model, x, target)
    raw = LayerGradCam(model, model.get_submodule(layer)).attribute(x, target=target)
    chosen = [str(w.message) for w in said if "auto" in str(w.message)]
    return [f"Grad-CAM gradaudit vs captum (grid view), {len(x)} images [224x224]: max |difference| "
            f"{(ours - theirs).abs().max().item():.2e}, largest map value {theirs.abs().max().item():.2e}, "
            f"maps positive in {(theirs > 0).float().mean().item():.0%} of pixels",
            f"GradCAM('auto') equals GradCAM({layer!r}): {torch.equal(auto, ours)}"
            f" ({chosen[0].split(',')[0] if chosen else 'no warning'})",
            f"captum LayerGradCam on the token layer itself (output [B, 197, 192]) returns {list(raw.shape)}: "
            "the gradient averaged over the 192 channels weights each token, summed over tokens (not Grad-CAM)"]


def _load() -> str:
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and repeats")
    parser.add_argument("--models", default="cnn,mlp,resnet", help="any of cnn,mlp,resnet,vit")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.cases:
        print(json.dumps(time_cases(json.loads(args.cases))))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [1, 4, 16, 64, 256] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    print(f"device {device}, {args.threads} threads, {SAMPLES} samples/steps; ms per image (lower is better)\n")
    header = (f"{'model':7} {'method':16} {'gradaudit':>10} {'captum':>9} {'captum best':>13} {'floor':>8} "
              f"{'ga/floor':>8} {'captum/ga':>9} {'best/ga':>8} {'ga MB':>7} {'captum MB':>9}")
    names = args.models.split(",")
    if names != ["vit"]:
        print(header)
        print("-" * len(header))
    for name in names:
        if name == "vit":
            vit_table(device, args.threads, args.quick)
            continue
        images = MODELS[name][2]
        base = {"model": name, "device": device, "threads": args.threads,
                "repeats": 3 if name == "resnet" or args.quick else 7}
        methods = ["ig", "smoothgrad"] + (["smoothgradcampp"] if MODELS[name][3] else []) + (
            ["deeplift", "gradientshap"] if name != "resnet" else [])      # Captum's DeepLift needs unshared ReLUs
        floors = [{**base, "method": "ig", "impl": "floor", "setting": s} for s in sizes]
        ours = [{**base, "method": m, "impl": "gradaudit"} for m in methods]
        captum = [{**base, "method": m, "impl": "captum", "setting": s} for m in ("ig", "smoothgrad")
                  for s in [None] + [s for s in sizes if s <= images * SAMPLES]]
        captum += [{**base, "method": m, "impl": "captum", "setting": None} for m in methods
                   if m in ("deeplift", "gradientshap")]
        cases = floors + ours + captum
        measured = in_fresh_process(__file__, ["--cases", json.dumps(cases)]) or [float("nan")] * len(cases)
        times = dict(zip(map(json.dumps, cases), measured, strict=True))

        def ms(case, times=times):
            return times[json.dumps(case)]

        floor_case = min(floors, key=ms)
        floor = ms(floor_case)
        for method, case in zip(methods, ours, strict=False):
            memory = measure({**case, "repeats": 1})["peak_mb"]
            line = f"{name:7} {method:16} {ms(case):10.2f} "
            if method == "smoothgradcampp":
                print(line + f"{'-':>9} {'-':>13} {floor:8.2f} {ms(case) / floor:7.2f}x {'-':>9} {'-':>8} "
                      f"{memory:7.0f} {'-':>9}", flush=True)
                continue
            default = next(c for c in captum if c["method"] == method and c["setting"] is None)
            their_memory = measure({**default, "repeats": 1})["peak_mb"]
            if method in ("deeplift", "gradientshap"):
                passes = floor * PASSES.get(method, SAMPLES) / SAMPLES
                print(line + f"{ms(default):9.2f} {'-':>13} {passes:8.2f} {ms(case) / passes:7.2f}x "
                      f"{ms(default) / ms(case):8.2f}x {'-':>8} {memory:7.0f} {their_memory:9.0f}", flush=True)
                continue
            tuned = min((c for c in captum if c["method"] == method and c["setting"] is not None), key=ms)
            print(line + f"{ms(default):9.2f} {ms(tuned):8.2f} (b{tuned['setting']:<3}) {floor:8.2f} "
                  f"{ms(case) / floor:7.2f}x {ms(default) / ms(case):8.2f}x {ms(tuned) / ms(case):7.2f}x "
                  f"{memory:7.0f} {their_memory:9.0f}", flush=True)
        print(f"{'':7} floor: best batch {floor_case['setting']} rows")
    if names == ["vit"]:
        return
    print("\nPeak memory of IntegratedGradients as steps grow (gradaudit defaults, cnn):")
    for steps in (20, 200):
        r = measure({"model": "cnn", "device": device, "threads": args.threads, "repeats": 1, "method": "ig",
                     "impl": "gradaudit", "steps": steps})
        c = measure({"model": "cnn", "device": device, "threads": args.threads, "repeats": 1, "method": "ig",
                     "impl": "captum", "steps": steps})
        print(f"  steps {steps:4d}: gradaudit {r['peak_mb']:7.1f} MB   captum default {c['peak_mb']:7.1f} MB")


if __name__ == "__main__":
    main()
