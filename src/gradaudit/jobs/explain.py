"""``gradaudit explain``: one image (or a tensor file) mapped by each named method into a figure, or
a folder of images mapped in resumable shards (``shards``) on the local or the Ray executor."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from ..engine.backprop import predicted_classes
from ..loading import first_conv_channels, load_image, load_model, load_tensor_file
from ..maps import heatmap
from ..methods.cam import CAMMethod
from ..report.figures import method_grid, zero_maps
from .executor import make_executor
from .presets import ExplainSettings
from .registry import LAYER_METHODS, METHODS, MethodSettings, check_method_names
from .runfolder import check_settings_file
from .shards import image_files, map_folder
from .subjects import check_layer


def check_names(names: list[str]) -> tuple[str, ...]:
    """``--method`` names from the registry (the layer methods take ``--layer``, "auto" by default)."""
    return check_method_names(names, "--method")


def explained(methods: dict, model, x, target) -> dict:
    """{name: map} of each method; the layer that ``layer="auto"`` chose is printed as one note per method,
    other warnings pass on unchanged."""
    maps = {}
    for name, method in methods.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps[name] = method(model, x, target)
        for warning in caught:
            if str(warning.message).startswith("layer='auto'"):
                print(f"{name}: {str(warning.message).split(';')[0]}")
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return maps


def zero_line(name: str, method, example: int | None = None) -> str:
    """The line ``explain`` prints for a map of ``name`` (drawn by ``method``) that is all zero, of example
    ``example`` (None: the one input): for a CAM-family method, why (every weighted sum at its layer is
    <= 0, so the final ReLU leaves nothing) and what to try."""
    where = "" if example is None else f" of example {example}"
    if isinstance(method, CAMMethod) and method.relu:
        return (f"{name}: the map{where} is all zero: every weighted sum at layer {method.layer} is <= 0, so the final "
                f"ReLU leaves nothing; try another --layer, or relu=False in the Python API to see the signed map")
    return f"{name}: the map{where} is all zero"


def explain_input(model_spec: str, weights: str | None, trust_pickle: bool, source: str, names: list[str],
                  settings: MethodSettings, out: str | Path, target: int | None = None, channels: int | None = None,
                  size: tuple | None = None, save_maps: str | None = None) -> Path:
    """Map one image or tensor file (``source``) with each method and draw them beside it; returns the figure."""
    names = check_names(names)
    model = load_model(model_spec, weights, trust_pickle)
    if source.endswith((".pt", ".pth")):
        x = load_tensor_file(source, trust_pickle)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{source} holds {type(x).__name__}; expected a tensor [C, H, W] or [B, C, H, W]")
        x = x.unsqueeze(0) if x.ndim == 3 else x
    else:
        x = load_image(source, channels or first_conv_channels(model), size)
    x = x.float()
    target = target if target is not None else predicted_classes(model, x, len(x))
    methods = {name: METHODS[name](settings) for name in names}
    maps = explained(methods, model, x, target)
    path = method_grid(x, maps, out, titles=[f"class {int(t)}" for t in torch.as_tensor(target).expand(len(x))],
                       methods=methods)
    print(f"explained class {torch.as_tensor(target).tolist()} with {', '.join(names)}")
    for name, i in zero_maps(maps):
        print(zero_line(name, methods[name], i if len(x) > 1 else None))
    if save_maps:
        torch.save({name: heatmap(m) for name, m in maps.items()}, save_maps)
        print(f"maps ([B, H, W] tensors): {save_maps}")
    return path


def explain_folder(settings: ExplainSettings, methods: MethodSettings) -> tuple[int, int]:
    """``--input-dir``: shards of images mapped locally or on Ray, one maps file per shard, resumable;
    returns (shards written, shards already there)."""
    names = check_names(settings.methods)
    if not settings.out_dir:
        raise ValueError("--input-dir needs --out-dir (the folder for the maps files)")
    image_files(settings.input_dir)
    weights = settings.weights
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights} does not exist")
    model = load_model(settings.model, weights, settings.trust_pickle)   # bad model or layer: refused before --out-dir
    if any(name in LAYER_METHODS for name in names):
        check_layer(model, settings.model, methods.layer)
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12] if weights else None
    check_settings_file(settings.out_dir, {"model": settings.model, "weights_sha256": digest, "methods": list(names),
                                           **asdict(methods), "target": settings.target, "channels": settings.channels,
                                           "size": settings.size, "shard_size": settings.shard_size}, "--out-dir")
    runner = make_executor(settings.executor, settings.ray_address, settings.cpus_per_task, settings.gpus_per_task)
    try:
        return map_folder(runner, settings.input_dir, settings.out_dir, settings.model, weights, settings.trust_pickle,
                          list(names), asdict(methods), settings.channels, settings.size, settings.target,
                          settings.shard_size)
    finally:
        runner.close()


def run(settings: ExplainSettings) -> None:
    """``gradaudit explain``: one input mapped into a figure, or a folder of images into maps files; prints where
    they went."""
    methods = MethodSettings(samples=settings.samples, steps=settings.steps, layer=settings.layer, seed=0)
    if settings.input_dir is not None:
        written, skipped = explain_folder(settings, methods)
        print(f"{written} shards mapped, {skipped} already there; maps files: {settings.out_dir}/maps-*.pt")
        return
    path = explain_input(settings.model, settings.weights, settings.trust_pickle, settings.input,
                         list(settings.methods), methods, settings.out, settings.target, settings.channels,
                         settings.size, settings.save_maps)
    print(f"figure: {path.resolve()}")
