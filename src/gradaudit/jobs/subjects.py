"""The models a command runs on: the user's own, named on the command line
(``NAME=package.module:factory@weights.pt``), or models trained here and kept in ``OUT/models/``.
The data and the models are checked to fit each other before any work starts, each misfit a
ValueError that names the model, the data and what was expected."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import data, train
from ..engine.probe import resolve_layer
from ..errors import UsageError
from ..loading import load_model
from ..store import Store

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)?$")


@dataclass(frozen=True)
class ModelEntry:
    """One ``--models`` entry: ``name`` (``KIND`` or ``KIND/SEED``), the factory spec and the weights file."""

    name: str
    factory: str
    weights: str

    def __str__(self) -> str:
        return f"{self.name}={self.factory}@{self.weights}"


def parse_models(entries) -> tuple[ModelEntry, ...]:
    """``"a=pkg.mod:f@a.pt,b=pkg.mod:f@b.pt"`` (or a sequence of such entries) as ModelEntry tuples."""
    if isinstance(entries, str):
        entries = [e for e in entries.split(",")]
    parsed = []
    for entry in entries:
        entry = entry.strip()
        name, equals, rest = entry.partition("=")
        factory, at, weights = rest.partition("@")
        module, colon, function = factory.partition(":")
        if not (equals and at and colon and name and module and function and weights):
            raise ValueError(f"--models entry {entry!r} must look like NAME=package.module:factory@weights.pt "
                             "(several separated by commas)")
        if not _NAME.match(name):
            raise ValueError(f"--models entry {entry!r}: the name {name!r} may hold letters, digits, _ . - and one "
                             "/ (KIND/SEED groups models as seeds of one kind)")
        parsed.append(ModelEntry(name, factory, weights))
    names = [p.name for p in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--models names must differ; {repeated[0]!r} is given twice")
    if not parsed:
        raise ValueError("--models is empty; give NAME=package.module:factory@weights.pt")
    return tuple(parsed)


def parse_model(spec: str) -> tuple[str, str]:
    """One ``--model`` ``package.module:factory@weights.pt`` as (factory, weights)."""
    factory, at, weights = spec.partition("@")
    module, colon, function = factory.partition(":")
    if not (at and colon and module and function and weights):
        raise UsageError(f"--model must look like package.module:factory@weights.pt; got {spec!r}")
    return factory, weights


def image_splits(spec: str, *, size=None, test_fraction: float = 0.2, seed: int = 0, trust_pickle: bool = False,
                 digits=(0, 1), copies: int = 2, source: str | None = None, position: str = "random") -> tuple:
    """(train, test) of ``spec``: BlockMNIST built from the bundled digits (or ``blockmnist:DIR``, or
    ``source``) with ``digits``, ``copies`` and the signal block's ``position``, or any dataset ``data.load`` reads."""
    scheme, _, where = spec.partition(":")
    if scheme != "blockmnist":
        return data.load_splits(spec, size=size, test_fraction=test_fraction, seed=seed, trust_pickle=trust_pickle)
    kwargs = {"digits": digits, "copies": copies, "seed": seed, "source": where or source, "position": position}
    return data.blockmnist("train", **kwargs), data.blockmnist("test", **kwargs)


def check_classes(y_train: Tensor, y_test: Tensor, source: str) -> int:
    """The number of classes (largest label + 1); at least two must occur in the training split."""
    present = torch.unique(y_train)
    if len(present) < 2:
        raise ValueError(f"--data {source}: the training split holds a single class ({present.tolist()}); "
                         "an audit needs at least two")
    if len(y_test) == 0:
        raise ValueError(f"--data {source}: the test split is empty")
    return int(max(y_train.max(), y_test.max())) + 1


def check_count(flag: str, asked: int, available: int, what: str, source: str) -> None:
    """Refuse (UsageError) ``flag`` asking for more than the ``available`` ``what`` of ``--data source``."""
    if asked > available:
        raise UsageError(f"{flag} {asked} is more than the {available} {what} of --data {source}; use {flag} "
                         f"{available} or fewer")


@torch.no_grad()
def check_classifier(model: nn.Module, name: str, x: Tensor, classes: int) -> None:
    """``model`` maps a batch of ``x`` to logits [B, C] with C >= ``classes`` (every label has an output)."""
    batch, modes = x[:2], [(m, m.training) for m in model.modules()]
    try:
        out = model.eval()(batch)
    except Exception as err:          # whatever the user's forward raises, the data does not fit the model
        raise ValueError(f"model {name!r} cannot take the data's images [B, {', '.join(map(str, x.shape[1:]))}]: "
                         f"{type(err).__name__}: {err}") from err
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(out, Tensor) or out.ndim != 2 or len(out) != len(batch):
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model {name!r} returned {shape} for a batch of {len(batch)} images; a classifier must "
                         f"return logits [{len(batch)}, classes]")
    if out.shape[1] < classes:
        raise ValueError(f"the data's labels go up to {classes - 1}, but model {name!r} outputs only {out.shape[1]} "
                         "classes")


def check_layer(model: nn.Module, name: str, layer: str) -> None:
    """``layer`` names a module of ``model`` (needed by the CAM and NormGrad methods), or is "auto" (the
    method chooses it on the first call)."""
    if layer == "auto":
        return
    try:
        resolve_layer(model, layer)
    except ValueError as err:
        raise ValueError(f"--layer: model {name!r}: {err}") from err


def save_model(model: nn.Module, path: Path) -> None:
    """``model``'s state dict at ``path``, through a temporary file (a killed run leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)


def trained_models(names: list[str], build: Callable[[], nn.Module], train_set, recipe: dict, seeds: list[int],
                   adversary, folder: Path, label: str) -> dict[str, nn.Module]:
    """Models ``names`` (seed ``seeds[i]`` each) trained on ``train_set``, or loaded from ``folder``.

    One by one rather than as a vmapped ensemble: on a CPU, vmap over convolutions measured
    2.5x slower than sequential training for three small CNNs (0.8x with PGD); same batches either way.
    """
    recipe = train.Recipe.of(**recipe)
    attack = f", PGD {adversary.norm} eps {adversary.eps:g}, {adversary.steps} steps" if adversary else ""
    print(f"training {len(names)} {label} models ({recipe.describe(adversary is not None)}{attack})", flush=True)
    trained = {}
    for name, seed in zip(names, seeds, strict=True):
        path = folder / f"{name.replace('/', '-')}.pt"
        torch.manual_seed(seed)
        model = build()
        if path.exists():
            model.load_state_dict(torch.load(path, weights_only=True))
            trained[name] = model.eval()
            continue
        trained[name] = train.fit(model, train_set, recipe, seed=seed, adversary=adversary)
        save_model(trained[name], path)
    return trained


def user_models(entries, trust_pickle: bool) -> tuple[dict[str, nn.Module], dict[str, dict]]:
    """The ``--models`` entries, loaded (weights_only unless ``trust_pickle``), and their "inputs" rows
    (stored by the caller once every check has passed and ``check_same_weights`` has seen the run folder).
    Reads no run folder: a command loads its models before it compares or touches one."""
    loaded, described = {}, {}
    for entry in parse_models(entries):
        loaded[entry.name] = load_model(entry.factory, entry.weights, trust_pickle, "--models")
        digest = hashlib.sha256(Path(entry.weights).read_bytes()).hexdigest()[:12]
        described[entry.name] = {"description": f"{entry.factory} with {entry.weights}", "sha256": digest}
    return loaded, described


def check_same_weights(described: dict[str, dict], store: Store) -> None:
    """Refuse (ValueError) models ``described`` by ``user_models`` whose name the run folder's ``store`` holds
    results for from other weights: stored results are keyed by model name, so they are not reused."""
    for name, row in described.items():
        key, digest = {"what": f"model {name}"}, row["sha256"]
        stored = store.get("inputs", key)
        if stored is not None and stored.get("sha256") != digest:
            raise ValueError(f"{store.path.parent} already holds results for model {name!r} from other weights "
                             f"(sha256 {stored.get('sha256')}, now {digest}); use a new --out or another name")
