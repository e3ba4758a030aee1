"""The command line is built from each command's settings (``jobs.presets.COMMANDS``): every flag is in its
--help with its text, a flag read from the command line makes the same settings as the Python API, and every
bad argument (an unknown --preset, a malformed command line) is one ``gradaudit: error:`` line, exit code 2."""

import re

import pytest

from gradaudit import cli
from gradaudit.errors import UsageError
from gradaudit.jobs.presets import COMMANDS
from gradaudit.jobs.runfolder import as_stored

WITH_PRESETS = [name for name, command in COMMANDS.items() if command.presets]


def _exit_code(argv) -> int:
    """What ``gradaudit ARGV`` exits with: main's return, or argparse's exit."""
    try:
        return cli.main(argv)
    except SystemExit as done:
        return done.code


def test_the_commands_that_run_presets_take_preset():
    assert {"audit", "unlearn", "evaluate", "influence"} <= set(WITH_PRESETS)


@pytest.mark.parametrize("command", WITH_PRESETS)
def test_an_unknown_preset_is_one_error_line_naming_the_presets(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                      # the default --out would be runs/...: nothing may appear
    assert _exit_code([command, "--preset", "nope"]) == 2
    captured = capsys.readouterr()
    known = ", ".join(COMMANDS[command].presets)
    assert captured.err == f"gradaudit: error: --preset must be one of {known}; got 'nope'\n"
    assert captured.out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_of_every_command_is_in_its_help_with_its_text(command, capsys):
    assert _exit_code([command, "--help"]) == 0
    shown = capsys.readouterr().out
    flags = COMMANDS[command].flags()
    usage = shown.split("\n\n")[0]
    assert set(re.findall(r"--[a-z][a-z-]*", usage)) == {f.name for f in flags if f.name.startswith("--")}
    joined = "".join(shown.split())                  # argparse wraps the help where it likes
    for flag in flags:
        assert flag.help.strip(), f"{command} {flag.name} has no help"
        assert flag.name in joined and "".join(flag.help.split()) in joined, f"{command} {flag.name}"


@pytest.mark.parametrize("argv,message", [
    (["audit", "--repeats"], "argument --repeats: expected one argument"),
    (["audit", "--bogus"], "unrecognized arguments: --bogus"),
    (["explain", "--method", "saliency"], "the following arguments are required: --model"),
    (["audit", "--repeats", "many"], "--repeats must be an integer; got 'many'"),
    (["audit", "--preset", "tiny", "--repeats", "0"], "--repeats must be an integer >= 1, got 0"),
    (["audit", "--preset", "synthetic", "--fill", "mean"], "--fill: preset 'synthetic' has no setting 'fill'"),
    (["explain", "--model", "m:f"], "give --input (one image or tensor file) or --input-dir"),
    (["influence-text", "--model", "m", "--train", "t.txt", "--prompt", "p", "--completion", "c", "--out", "o",
      "--rank", "4", "--full-rank"], "--rank and --full-rank both set rank; give one of them"),
])
def test_a_bad_command_line_is_one_error_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradaudit: error: ") and err.count("\n") == 1 and message in err, err


def test_flags_make_the_settings_the_python_api_makes():
    audit = COMMANDS["audit"]
    read = audit.from_flags({"--preset": "tiny", "--eps": "0.2", "--recipe": "lr=0.01,epochs=2", "--faithfulness": True,
                             "--methods": "saliency,ig", "--models": "a=m:f@w.pt", "--size": "8,8"})
    made = audit.preset("tiny", adversary={"eps": 0.2}, retrain_recipe={"lr": 0.01, "epochs": 2}, faithfulness=True,
                        methods=["saliency", "ig"], models="a=m:f@w.pt", size=(8, 8))
    assert read == made and as_stored(read) == as_stored(made)        # a run folder compares them equal
    assert read.adversary == {"norm": "linf", "eps": 0.2, "steps": 2}             # over the preset's
    assert read.retrain_recipe == {"optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 64}
    assert read.methods == ("saliency", "ig") and read.models == ("a=m:f@w.pt",)
    assert audit.from_flags({"--preset": "synthetic", "--eps": "0.3", "--seed": "2"}).eps == 0.3
    text = COMMANDS["influence-text"].from_flags({"--model": "m", "--train": "t.txt", "--prompt": "p",
                                                  "--completion": "c", "--full-rank": True})
    assert text.rank is None and text.special_tokens is False


def test_a_bad_setting_is_refused_wherever_it_comes_from():
    with pytest.raises(UsageError, match="--repeats must be an integer >= 1, got 0"):
        COMMANDS["audit"].preset("tiny", repeats=0)
    with pytest.raises(UsageError, match="--damping does not apply to --strategy identity"):
        COMMANDS["influence"].preset("quick", strategy="identity", damping=0.1)
    with pytest.raises(UsageError, match="preset 'synthetic' has no setting 'repeats'"):
        COMMANDS["audit"].preset("synthetic", repeats=2)
    with pytest.raises(UsageError, match="--preset must be one of quick, tiny; got 'huge'"):
        COMMANDS["unlearn"].preset("huge")
