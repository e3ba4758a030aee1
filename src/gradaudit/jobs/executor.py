"""Where a job's units of work run: here, one after another (``local``), or as Ray tasks (``ray``).

Units are ``gradaudit.units.Unit``s. Large arguments are ``share``d once: Ray puts them in its object store
and every task reads the same copy. Results come back to the driver, which alone writes the
store, as each unit finishes; so resume and no-duplicates hold exactly as with ``local``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from ..units import LocalExecutor, Unit, UnitsFailed

EXECUTORS = ("local", "ray")
CONNECT_SECONDS = 5.0


def _run_with_threads(threads: int, function: Callable, *args):
    """Run ``function`` on a worker with ``threads`` intra-op threads (the same count gives the same floats)."""
    import torch

    torch.set_num_threads(threads)
    return function(*args)


def _reachable(address: str) -> None:
    """A ValueError within ``CONNECT_SECONDS`` when nothing listens at ``HOST:PORT``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address must be auto or HOST:PORT; got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS):
            pass
    except OSError as err:
        raise ValueError(f"--ray-address {address}: nothing answers there within {CONNECT_SECONDS:g} s ({err}); "
                         "start a head node with `ray start --head` or give its address") from None


def _token_auth_may_help(address: str | None) -> bool:
    """An explicit address, no RAY_AUTH_MODE set, and a Ray token at hand (env or ~/.ray/auth_token)."""
    token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
        (Path.home() / ".ray" / "auth_token").exists()
    return address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ and bool(token)


class RayExecutor:
    """Units as Ray tasks on a cluster (``address``: "auto" or HOST:PORT) or on a local Ray that starts
    here and stops with ``close()`` (address None); a Ray this process already runs is used as it is.
    A task whose worker dies is retried (``max_retries``); one that raises is not, and is reported by
    name while the others finish."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float = 0,
                 max_retries: int = 3, num_cpus: int | None = None):
        if cpus_per_task <= 0 or gpus_per_task < 0:
            raise ValueError(f"--cpus-per-task must be > 0 and --gpus-per-task >= 0; got {cpus_per_task}, "
                             f"{gpus_per_task}")
        if address not in (None, "auto"):
            _reachable(address)
        if _token_auth_may_help(address) and "ray" not in sys.modules:
            # `ray start --head` (Ray 2.59+) turns token authentication on when a token file exists, but a
            # client joining by HOST:PORT sends the token only with RAY_AUTH_MODE=token, read when ray is
            # imported; a cluster without authentication accepts such a client too (checked with Ray 2.60).
            os.environ["RAY_AUTH_MODE"] = "token"
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'gradaudit[dist]' (or pip install ray)") from None
        self._ray = ray
        self._shared = {}
        self.cpus_per_task, self.gpus_per_task, self.max_retries = cpus_per_task, gpus_per_task, max_retries
        self._started = not ray.is_initialized()
        if self._started:
            try:
                self._connect(address, num_cpus)
            except ConnectionError as err:
                raise ValueError(f"--ray-address {address}: no Ray cluster found ({err}); start one with "
                                 "`ray start --head` (a cluster with token authentication also needs "
                                 "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN)") from None
        self.address = (address or "local") if self._started else "the Ray this process had already started"
        cpus = ray.cluster_resources().get("CPU", 1)
        self.workers = max(1, int(cpus // cpus_per_task))

    def _connect(self, address: str | None, num_cpus: int | None) -> None:
        """Start a local Ray (address None; its workers import from the working directory, as the driver
        does) or join the cluster at ``address``."""
        if address is None:
            paths = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
            self._ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
                           runtime_env={"env_vars": {"PYTHONPATH": paths}})
        else:
            self._ray.init(address=address, log_to_driver=False, configure_logging=False)

    def share(self, value, pins: tuple = ()):
        """``value`` in Ray's object store; with ``pins`` (the tensors it is made of), once per run: a
        later share of the same tensors returns the same object (they are kept alive, so no other
        tensor can take their ids)."""
        if not pins:
            return self._ray.put(value)
        key = tuple(id(p) for p in pins)
        if key not in self._shared:
            self._shared[key] = (pins, self._ray.put(value))
        return self._shared[key][1]

    def run(self, units: list[Unit], on_result: Callable[[Unit, object], None]) -> None:
        ray = self._ray
        remote = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                            max_retries=self.max_retries, retry_exceptions=False)(_run_with_threads)
        threads = max(1, int(self.cpus_per_task))
        pending = {remote.remote(threads, unit.function, *unit.args): unit for unit in units}
        failed = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:
                    failed.append(f"{unit.name}: {str(err).strip().splitlines()[-1]}")
                    continue
                on_result(unit, result)
        if failed:
            raise UnitsFailed(f"{len(failed)} of {len(units)} units failed for good (the others are stored; rerun "
                              f"to retry): " + "; ".join(failed))

    def close(self) -> None:
        self._shared.clear()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False


def make_executor(kind: str = "local", address: str | None = None, cpus_per_task: float = 1,
                  gpus_per_task: float = 0) -> LocalExecutor | RayExecutor:
    """The executor named ``kind`` ("local" or "ray")."""
    if kind not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}; got {kind!r}")
    if kind == "local":
        if address is not None:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor()
    start = time.perf_counter()
    executor = RayExecutor(address, cpus_per_task, gpus_per_task)
    print(f"ray: {executor.workers} workers at {executor.address} ({time.perf_counter() - start:.1f}s to connect)",
          flush=True)
    return executor
