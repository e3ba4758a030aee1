"""Assertions and oracle imports shared by the tests."""

import importlib.util
import sys
import types
import warnings

import torch


def import_quantus():
    """Quantus 0.6.0, imported. Quantus imports zennit when zennit is installed, and zennit's __init__ imports its
    torchvision canonizers, which need torchvision (not installable beside our torch): an empty
    ``zennit.torchvision`` stands in, as no metric here uses those canonizers."""
    if importlib.util.find_spec("torchvision") is None:
        sys.modules.setdefault("zennit.torchvision", types.ModuleType("zennit.torchvision"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus
    return quantus


def assert_close_rel(actual, expected, rel=1e-5):
    """max |actual - expected| <= rel * max |expected| (relative to the map's scale)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().clamp(min=1e-12)
    error = (actual - expected).abs().max()
    assert error <= rel * scale, f"max abs error {error:.3e} > {rel} x {scale:.3e}"


def snapshot(model):
    """Everything about a model that attribution must leave unchanged."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modules": [id(m) for m in model.modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     for m in model.modules()),
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["modules"] == before["modules"]
    assert after["hooks"] == before["hooks"]
    for a, b in zip(after["grad"], before["grad"], strict=False):
        assert (a is None and b is None) or torch.equal(a, b)
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key


def stored_rows(path, audit="diffroar"):
    """(key, row) of every row of ``audit`` in a run's store, in the order written ([] before it exists)."""
    import sqlite3

    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT key, row FROM results WHERE audit = ? ORDER BY rowid", (audit,)).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def kill_once_rows_appear(process, store, timeout=300, audit="diffroar"):
    """kill -9 ``process`` as soon as ``store`` holds a row of ``audit`` (it must still be running then);
    returns the rows stored by that moment."""
    import os
    import signal
    import time

    deadline = time.time() + timeout
    while not stored_rows(store, audit) and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be interrupted:\n" + process.stdout.read()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return stored_rows(store, audit)
