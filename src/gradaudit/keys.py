"""Store keys: what a stored row answers for, derived in one place from everything that made it.

``fingerprint(value)`` turns an audit call's arguments into JSON that changes whenever the numbers
could: tensors and arrays by content (dtype, shape and a SHA-256 of their bytes), a model by its class,
its structure and every parameter and buffer, a method (or any dataclass) by its class and every field,
a callable by its module, qualified name, bytecode and closure, data objects by the tensors they hold.
``key(audit, arguments)`` is the digest of that JSON, with ``VERSION`` inside, so rows keyed by an
earlier scheme are never served. A value it cannot describe is a TypeError naming where it sits,
never a silent ``repr``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import math
import types
import weakref
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

VERSION = 2
"""The key scheme; a store written under another scheme is refused (``store.Store``)."""

_digests: dict[int, tuple[weakref.ref, int, int, str]] = {}


def tensor_digest(tensor: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes, cached while the tensor is alive and unmodified
    (the cache entry holds its in-place version counter and storage pointer)."""
    identity = id(tensor)
    cached = _digests.get(identity)
    if cached is not None and cached[0]() is tensor and cached[1:3] == (tensor._version, tensor.data_ptr()):
        return cached[3]
    data = tensor.detach()
    if data.is_sparse:
        data = data.to_dense()
    data = data.cpu().contiguous()
    hashed = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    if data.numel():
        hashed.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.dtype != torch.bool
                      else data.numpy().tobytes())
    digest = hashed.hexdigest()
    if not tensor.requires_grad:
        # Parameters are hashed afresh each time: ``p.data`` edits bypass the version counter.
        _digests[identity] = (weakref.ref(tensor, lambda _, i=identity: _digests.pop(i, None)),
                              tensor._version, tensor.data_ptr(), digest)
    return digest


def _name(value) -> str:
    return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__qualname__)}"


def _module(model: nn.Module, where: str) -> dict:
    state = [[name, tensor_digest(t)] for name, t in model.state_dict(keep_vars=True).items()]
    return {"module": _name(type(model)), "structure": hashlib.sha256(repr(model).encode()).hexdigest(),
            "state": state}


def _callable(function, where: str) -> dict:
    if isinstance(function, functools.partial):
        return {"partial": _callable(function.func, where), "args": fingerprint(function.args, f"{where}.args"),
                "keywords": fingerprint(function.keywords, f"{where}.keywords")}
    if isinstance(function, types.MethodType):
        return {"method": _callable(function.__func__, where), "of": fingerprint(function.__self__, f"{where}.self")}
    code = getattr(function, "__code__", None)
    described = {"callable": _name(function)}
    if code is not None:
        described["code"] = hashlib.sha256(code.co_code + repr(_constants(code)).encode()).hexdigest()
        cells = zip(code.co_freevars, function.__closure__ or (), strict=True)
        described["closure"] = [_cell(c, f"{where}.<closure {n}>") for n, c in cells]
    return described


def _constants(code) -> list:
    """A code object's constants with nested code objects replaced by their own constants and bytecode."""
    return [[c.co_code.hex(), _constants(c)] if isinstance(c, types.CodeType) else c for c in code.co_consts]


def _cell(cell, where: str):
    try:
        value = cell.cell_contents
    except ValueError:
        return None
    return fingerprint(value, where)


def _object(value, where: str) -> dict:
    """A plain object by its class and its attributes, private ones included; a loader by its dataset and
    sampler; a map-style dataset that keeps no tensors ``.x`` by its items, read in order."""
    if isinstance(value, DataLoader):
        return {"loader": fingerprint(value.dataset, f"{where}.dataset"), "sampler": _name(type(value.sampler)),
                "batch_size": value.batch_size, "drop_last": value.drop_last}
    if isinstance(value, Dataset) and not isinstance(getattr(value, "x", None), Tensor) and hasattr(value, "__len__"):
        return {"dataset": _name(type(value)), "items": [fingerprint(value[i], f"{where}[{i}]")
                                                         for i in range(len(value))]}
    state = vars(value)
    return {"object": _name(type(value)),
            "state": {k: fingerprint(v, f"{where}.{k}") for k, v in sorted(state.items())
                      if not isinstance(v, (types.ModuleType, weakref.ref))}}


def fingerprint(value, where: str = "value"):
    """JSON-ready description of ``value`` that changes whenever its content does (see the module docstring).
    ``where`` names the value in the error raised for a type this cannot describe."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return {"enum": _name(type(value)), "value": fingerprint(value.value, where)}
    if isinstance(value, PurePath):
        return {"path": str(value)}
    if isinstance(value, Tensor):
        return {"tensor": tensor_digest(value)}
    if isinstance(value, np.ndarray):
        return {"tensor": tensor_digest(torch.from_numpy(np.ascontiguousarray(value)))}
    if isinstance(value, np.generic):
        return fingerprint(value.item(), where)
    if isinstance(value, (torch.dtype, torch.device)):
        return {type(value).__name__: str(value)}
    if isinstance(value, torch.Generator):
        return {"generator": tensor_digest(value.get_state())}
    if isinstance(value, nn.Module):
        return _module(value, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": _name(type(value)),
                "fields": {f.name: fingerprint(getattr(value, f.name), f"{where}.{f.name}")
                           for f in dataclasses.fields(value)}}
    if isinstance(value, Mapping):
        return {"mapping": [[fingerprint(k, where), fingerprint(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(json.dumps(fingerprint(v, where), sort_keys=True) for v in value)}
    if isinstance(value, (range, slice)):
        return {type(value).__name__: [value.start, value.stop, value.step]}
    if callable(value) and (isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type,
                                               functools.partial, types.MethodType))):
        return _callable(value, where)
    if hasattr(value, "__dict__") and not isinstance(value, types.ModuleType):
        return _object(value, where)
    raise TypeError(f"cannot key {where}: a {type(value).__name__} is not something a store key can describe "
                    "(tensors, arrays, models, dataclasses, callables, plain objects and JSON values are)")


def key(audit: str, arguments: dict) -> str:
    """The store key of one unit of ``audit``: a digest of the fingerprint of ``arguments`` under ``VERSION``."""
    described = {"version": VERSION, "audit": audit, "arguments": fingerprint(arguments, "arguments")}
    return hashlib.sha256(json.dumps(described, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
