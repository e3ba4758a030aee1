"""How a command's settings are declared, once: a setting is a field of a frozen dataclass whose metadata holds
its command-line flags (name, help, how its text is read) and its check, and a ``Command`` names the class and
its presets. The command line builds each command's arguments from ``Command.flags`` and hands what was given
back to ``Command.from_flags``, so a new flag is one new field. Every bad value, unknown preset or setting is a
``UsageError`` naming its flag: one ``gradaudit: error:`` line."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from numbers import Real
from typing import Any

from ..engine.checks import check_positive_int
from ..errors import UsageError


def text(value: str, flag: str) -> str:
    """A flag's text as it is."""
    return value


def integer(value: str, flag: str) -> int:
    """A flag's text as an integer."""
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{flag} must be an integer; got {value!r}") from None


def number(value: str, flag: str) -> float:
    """A flag's text as a number."""
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{flag} must be a number; got {value!r}") from None


def names(value: str, flag: str) -> tuple[str, ...]:
    """``a,b,c`` as a tuple of names."""
    return tuple(value.split(","))


def numbers_of(value: str, flag: str) -> tuple[float, ...]:
    """``0.1,0.2`` as a tuple of numbers."""
    return tuple(number(part, flag) for part in value.split(","))


def height_width(value: str, flag: str) -> tuple[int, int]:
    """``H,W`` as two positive integers."""
    parts = value.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"{flag} must be H,W (two positive integers); got {value!r}")
    return int(parts[0]), int(parts[1])


def _scalar(value: str):
    """``3`` as an int, ``0.1`` as a float, ``none`` as None, anything else as text."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return None if value == "none" else value


def key_values(value: str, flag: str) -> dict:
    """``optimizer=sgd,lr=0.1,epochs=10`` as a dict (numbers as numbers, ``none`` as None)."""
    pairs = [part.partition("=") for part in value.split(",")]
    if not all(key and equals and item for key, equals, item in pairs):
        raise UsageError(f"{flag} must be KEY=VALUE pairs separated by commas (e.g. optimizer=sgd,lr=0.1,"
                         f"epochs=10); got {value!r}")
    return {key.strip(): _scalar(item.strip()) for key, _, item in pairs}


def positive(value, name: str):
    """An integer >= 1."""
    check_positive_int(name, value)
    return value


def optional(check: Callable) -> Callable:
    """``check``, with None allowed (a setting that may be off)."""
    return lambda value, name: value if value is None else check(value, name)


def one_of(*choices: str) -> Callable:
    """A check that the value is one of ``choices``."""
    def check(value, name: str):
        if value not in choices:
            raise UsageError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value
    return check


def share(value, name: str):
    """A share strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < 1:
        raise UsageError(f"{name} must be a share in (0, 1); got {value!r}")
    return value


def share_or_none(value, name: str):
    """A share in [0, 1): 0 turns the setting off."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < 1:
        raise UsageError(f"{name} must be a share in [0, 1); got {value!r}")
    return value


def at_least_zero(value, name: str):
    """A finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{name} must be a number >= 0; got {value!r}")
    return value


@dataclass(frozen=True)
class Flag:
    """One command-line flag: ``name`` (``--like-this``; without dashes, a positional argument), its ``help``,
    ``read(text, name)`` making the value from the flag's text (None: a switch, a flag without text, that sets
    ``value``), the ``setting`` (field) it sets and whether it must be given; ``flags_of`` fills in the last
    two, and the name where ``option`` left it empty, from the field."""

    name: str
    help: str
    read: Callable[[str, str], Any] | None = text
    value: Any = True
    setting: str = ""
    required: bool = False

    @property
    def dest(self) -> str:
        """The flag's name as an identifier (``--seeds-per-model``: ``seeds_per_model``)."""
        return self.name.lstrip("-").replace("-", "_")


def option(default=MISSING, help: str | None = None, *, read: Callable | None = text, check: Callable | None = None,
           flag: str | None = None, factory=MISSING, also: tuple[Flag, ...] = ()):
    """A setting: a dataclass field with ``default`` (or ``factory``; neither: the flag must be given). With
    ``help`` the command line sets it through ``flag`` (default ``--field-name``), its text read by ``read``
    (None: a switch setting True); ``also``: more flags that set it. ``check(value, name)`` runs whenever
    settings are made (preset, command line, Python) and returns the value as stored (names as a tuple),
    or raises naming the flag."""
    flags = ((Flag(flag or "", help, read),) if help else ()) + tuple(also)
    return field(default=default, default_factory=factory, metadata={"flags": flags, "check": check})


def switch(help: str, *, flag: str | None = None, sets=True, default=False):
    """A setting that a flag without a value (``flag``, default ``--field-name``) sets to ``sets``."""
    return option(default, also=(Flag(flag or "", help, None, sets),))


def flags_of(kind: type) -> dict[str, Flag]:
    """{flag name: flag} of the settings class ``kind`` in field order, each knowing its setting and whether it
    must be given (a field without a default)."""
    found = {}
    for f in fields(kind):
        required = f.default is MISSING and f.default_factory is MISSING
        for flag in f.metadata.get("flags", ()):
            name = flag.name or "--" + f.name.replace("_", "-")
            found[name] = replace(flag, name=name, setting=f.name, required=required)
    return found


def _label(f) -> str:
    """The name a setting's errors give: its first flag, or for a setting without one its name (``audit-images``)."""
    declared = f.metadata.get("flags", ())
    if not declared:
        return f.name.replace("_", "-")
    return declared[0].name or "--" + f.name.replace("_", "-")


class Settings:
    """The base of every command's settings (a frozen dataclass): each field's check runs whenever an instance
    is made (a preset, a ``replace``, the command line) and may make its value canonical, then ``check`` runs
    across fields; any bad value is a UsageError, so a preset or a run folder never holds one."""

    def __post_init__(self) -> None:
        try:
            for f in fields(self):
                check = f.metadata.get("check")
                if check is not None:
                    object.__setattr__(self, f.name, check(getattr(self, f.name), _label(f)))
            self.check()
        except UsageError:
            raise
        except ValueError as err:
            raise UsageError(str(err)) from None

    def check(self) -> None:
        """Checks across settings; a subclass raises a UsageError naming the flags that do not go together."""


@dataclass(frozen=True)
class Command:
    """A command's settings: its ``help`` line, the settings class ``kind`` whose fields declare its flags, its
    ``presets`` (named settings, the first the default; other classes among them add their own flags), the
    ``--preset`` help, and ``out``, the run folder's flag (where results go is no setting of theirs)."""

    name: str
    help: str
    kind: type
    presets: Mapping[str, Settings] = field(default_factory=dict)
    preset_help: str = ""
    out: Flag | None = None

    def flags(self) -> tuple[Flag, ...]:
        """Every flag, in --help order: --preset, the run folder, then each setting's (where two settings classes
        of the presets declare one flag, the first class's help)."""
        found = {}
        for kind in (self.kind, *(type(p) for p in self.presets.values())):
            for name, flag in flags_of(kind).items():
                found.setdefault(name, flag)
        head = (Flag("--preset", self.preset_help),) if self.presets else ()
        return (*head, *((self.out,) if self.out else ()), *found.values())

    def _base(self, preset: str | None) -> tuple[str, Settings | None]:
        """(name, preset) of the preset named ``preset`` (None: the first); ("", None) for a command without."""
        if not self.presets:
            return "", None
        name = next(iter(self.presets)) if preset is None else preset
        if name not in self.presets:
            raise UsageError(f"--preset must be one of {', '.join(self.presets)}; got {name!r}")
        return name, self.presets[name]

    def preset(self, preset: str | None = None, **overrides) -> Settings:
        """The preset named ``preset`` (None: the first; without presets, the class's defaults) with
        ``overrides`` by field name (a dict updates the preset's dict), checked."""
        name, base = self._base(preset)
        if base is None:
            unknown = [setting for setting in overrides if setting not in {f.name for f in fields(self.kind)}]
            if unknown:
                raise UsageError(f"{self.name} has no setting {unknown[0]!r}")
            return self.kind(**overrides)
        unknown = [setting for setting in overrides if setting not in {f.name for f in fields(base)}]
        if unknown:
            raise UsageError(f"preset {name!r} has no setting {unknown[0]!r}")
        merged = {setting: {**getattr(base, setting), **value} if isinstance(getattr(base, setting), dict) else value
                  for setting, value in overrides.items()}
        return replace(base, **merged)

    def from_flags(self, given: Mapping[str, Any]) -> Settings:
        """The settings the command line asks for; ``given`` maps each flag given to its text (True for a switch):
        --preset chooses the preset, each other flag is read and sets its setting (the chosen preset's class's
        own flag first), the run folder's flag is left to the caller; two flags for one setting are refused."""
        given = dict(given)
        preset = given.pop("--preset", None)
        if self.out:
            given.pop(self.out.name, None)
        name, base = self._base(preset)
        kind = type(base) if base is not None else self.kind
        declared = {flag.name: flag for flag in self.flags()} | flags_of(kind)
        known = {f.name for f in fields(kind)}
        overrides, by = {}, {}
        for flag_name, value in given.items():
            flag = declared[flag_name]
            if flag.setting not in known:
                raise UsageError(f"{flag_name}: preset {name!r} has no setting {flag.setting!r}")
            if flag.setting in by:
                raise UsageError(f"{by[flag.setting]} and {flag_name} both set {flag.setting}; give one of them")
            by[flag.setting] = flag_name
            overrides[flag.setting] = flag.value if flag.read is None else flag.read(value, flag_name)
        return self.preset(preset, **overrides)
