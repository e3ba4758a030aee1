"""Command line: ``gradaudit audit``, ``evaluate``, ``influence``, ``unlearn``, ``report``, ``explain``,
``recommend``, ``explain-text``, ``influence-text``.

Each command's arguments are built from its settings (``jobs.presets.COMMANDS``: the fields declare the flags,
their help and their checks), and what was given goes back to ``Command.from_flags``; a handler here calls the
command's job. Every bad argument ends in one ``gradaudit: error:`` line and exit code 2."""

from __future__ import annotations

import argparse
import sys

from .jobs.presets import COMMANDS
from .jobs.settings import Command, Flag
from .units import UnitsFailed


def default_out(command: str, preset: str) -> str:
    """The run folder of ``gradaudit COMMAND --preset PRESET`` without --out, one per preset so that no two
    presets' runs meet: runs/PRESET for audit (runs/quick: the demo's), runs/COMMAND for another command's
    quick preset (its demo's) and runs/COMMAND-PRESET for its other presets."""
    if command == "audit":
        return f"runs/{preset}"
    return f"runs/{command}" if preset == "quick" else f"runs/{command}-{preset}"


def _audit(settings, out: str) -> None:
    from .jobs import audit

    audit.print_summary(audit.run(settings, out))


def _unlearn(settings, out: str) -> None:
    from .jobs import unlearn

    unlearn.print_summary(unlearn.run(settings, out))


def _evaluate(settings, out: str) -> None:
    from .jobs import evaluate

    evaluate.print_summary(evaluate.run(settings, out))


def _influence(settings, out: str) -> None:
    from .jobs import influence

    influence.print_summary(influence.run(settings, out))


def _influence_text(settings, out: str) -> None:
    from .jobs import influence_text

    influence_text.print_summary(influence_text.run(settings, out))


def _recommend(settings, out: str | None) -> None:
    from .jobs.recommend import print_ranking, recommend

    print_ranking(recommend(settings), list(settings.neighbourhoods))


def _explain(settings, out: str | None) -> None:
    from .jobs import explain

    explain.run(settings)


def _explain_text(settings, out: str | None) -> None:
    from .jobs.explain_text import explain_text

    explain_text(settings)


def _report(settings, out: str | None) -> None:
    from .report import write_report

    print(f"report: {write_report(settings.run).resolve()}")


HANDLERS = {"audit": _audit, "unlearn": _unlearn, "evaluate": _evaluate, "influence": _influence,
            "influence-text": _influence_text, "recommend": _recommend, "explain": _explain,
            "explain-text": _explain_text, "report": _report}


class _Parser(argparse.ArgumentParser):
    """argparse ending a malformed command line (an unknown flag, a flag without its value, a missing required
    one) in one ``gradaudit: error:`` line, as every other bad input."""

    def error(self, message: str):
        self.exit(2, f"gradaudit: error: {message}\n")


def _argument(command: argparse.ArgumentParser, flag: Flag) -> None:
    """``flag`` as an argument of ``command``; flags not given leave no attribute, so only what was given is read."""
    shown = flag.help.replace("%", "%%")                # argparse formats help with %
    if not flag.name.startswith("-"):
        command.add_argument(flag.name, help=shown)
    elif flag.read is None:
        command.add_argument(flag.name, action="store_true", default=argparse.SUPPRESS, help=shown)
    else:
        command.add_argument(flag.name, required=flag.required, default=argparse.SUPPRESS, help=shown)


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per entry of ``COMMANDS``, each flag from its settings' fields."""
    root = _Parser(prog="gradaudit", description="Saliency maps you can check.")
    commands = root.add_subparsers(dest="command", required=True)
    for spec in COMMANDS.values():
        command = commands.add_parser(spec.name, help=spec.help, description=spec.help)
        for flag in spec.flags():
            _argument(command, flag)
    return root


def _out(spec: Command, given: dict) -> str | None:
    """The run folder: --out, or the preset's default folder; None for a command without one."""
    if spec.out is None:
        return None
    return given.get(spec.out.name) or default_out(spec.name, given.get("--preset") or next(iter(spec.presets)))


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    spec = COMMANDS[args.command]
    given = {flag.name: getattr(args, flag.dest) for flag in spec.flags() if hasattr(args, flag.dest)}
    try:
        HANDLERS[spec.name](spec.from_flags(given), _out(spec, given))
    except (ValueError, FileNotFoundError, UnitsFailed) as err:   # UsageError is a ValueError; bugs keep tracebacks
        print(f"gradaudit: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
