"""Where a job's units of work run: here, one after another (``local``), or as Ray tasks (``ray``).

Units are ``gradaudit.units.Unit``s. Large arguments are ``share``d once: Ray puts them in its object store
and every task reads the same copy. Results come back to the driver, which alone writes the
store, as each unit finishes; so resume and no-duplicates hold exactly as with ``local``.

A unit lost to the system (its node or worker died, an object or its owner unreachable) is submitted
again, its lost shared inputs put again, up to ``max_retries`` times; a unit whose own code raises is
reported at once. The driver joins a cluster in the cluster's authentication mode, asked of the cluster
(a ``RAY_AUTH_MODE`` the user sets must agree), never guessed from a token file in the user's home:
a driver that expects a token its cluster's workers never send refuses their calls back to it, and a
lost node then fails every unit with ``OwnerDiedError`` instead of costing a retry.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from ..errors import UsageError
from ..units import LocalExecutor, Unit, UnitsFailed

EXECUTORS = ("local", "ray")
CONNECT_SECONDS = 5.0
AUTH_MODES = ("disabled", "token")
PROBE_SECONDS = 60.0
REFUSED = 3

# Run in a child process whose RAY_AUTH_MODE is the mode to try (the mode is read when ray is imported):
# exit 0 if the cluster at argv[1] answers a GCS call, REFUSED (reason on stdout) if it refuses the
# caller's credentials; anything else (traceback on stderr) is a cluster that could not be reached.
_PROBE = f"""
import sys
from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
from ray._private.services import canonicalize_bootstrap_address_or_die
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    ensure_token_if_auth_enabled(None, create_token_if_missing=False)
    GcsClient(address=canonicalize_bootstrap_address_or_die(sys.argv[1])).internal_kv_get(b"gradaudit", None)
except AuthenticationError as err:
    print(str(err).strip().splitlines()[0])
    sys.exit({REFUSED})
"""


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


def _refusal(address: str, mode: str) -> str | None:
    """None if the cluster at ``address`` accepts a driver in authentication ``mode``; else why it refused.
    Asked in a child process, since a process's mode is fixed when it imports ray."""
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                               timeout=PROBE_SECONDS, env={**os.environ, "RAY_AUTH_MODE": mode})
    except subprocess.TimeoutExpired:
        raise ValueError(f"--ray-address {address}: the cluster did not answer within {PROBE_SECONDS:g} s") from None
    if probe.returncode == REFUSED:
        return probe.stdout.strip()
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise ValueError(f"--ray-address {address}: no Ray cluster found ({last}); start one with `ray start --head`")
    return None


def cluster_auth_mode(address: str) -> str:
    """The authentication mode of the cluster at ``address``, which a driver joining it must use: learnt by
    connecting without a token and, if refused, with one; a ValueError naming both attempts when neither
    is accepted. ``RAY_AUTH_MODE``, if the user set it, must agree (a ValueError says how it does not). A
    token file in the user's home decides nothing: a driver with a token is admitted by a cluster without
    authentication too, but then refuses its workers' calls back, and a lost node fails every unit."""
    chosen = os.environ.get("RAY_AUTH_MODE", "").lower() or None
    if chosen not in (None, *AUTH_MODES):
        raise ValueError(f"RAY_AUTH_MODE must be one of {', '.join(AUTH_MODES)}; got {os.environ['RAY_AUTH_MODE']!r}")
    without = _refusal(address, "disabled")
    if without is None:
        if chosen == "token":
            raise ValueError(f"--ray-address {address}: RAY_AUTH_MODE=token, but the cluster admits drivers without "
                             "a token (it has no authentication), so its workers send none and this driver would "
                             "refuse their calls back; unset RAY_AUTH_MODE or set it to disabled")
        return "disabled"
    if chosen == "disabled":
        raise ValueError(f"--ray-address {address}: RAY_AUTH_MODE=disabled, but the cluster refused this driver "
                         f"without a token ({without}); unset RAY_AUTH_MODE and give the cluster's token")
    with_token = _refusal(address, "token")
    if with_token is None:
        return "token"
    raise ValueError(f"--ray-address {address}: the cluster refused this driver without a token ({without}) and "
                     f"with one ({with_token}); put the cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                     "~/.ray/auth_token")


def _ray_missing() -> bool:
    """Whether ray cannot be imported (not installed, or blocked with ``sys.modules["ray"] = None``), asked
    without importing it: the driver's authentication mode must be settled before ray is imported."""
    if "ray" in sys.modules:
        return sys.modules["ray"] is None
    return importlib.util.find_spec("ray") is None


def _use_auth_mode(mode: str) -> None:
    """Make ``mode`` this process's Ray authentication mode (and its children's). Ray reads RAY_AUTH_MODE
    when it is imported; if it already was, its configuration is read again, as ``ray.init`` does when
    it turns token authentication on for a cluster it starts."""
    os.environ["RAY_AUTH_MODE"] = mode
    if "ray._raylet" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def _cause(err: BaseException) -> BaseException:
    """The exception behind ``err``: what a task raised (or failed on) when Ray wraps it in a RayTaskError."""
    from ray.exceptions import RayTaskError

    return err.cause if isinstance(err, RayTaskError) and err.cause is not None else err


def lost_to_the_system(err: BaseException) -> bool:
    """Whether a unit failed for a reason of the system, not of its own code: its node or worker died, or
    an object it needs (or its owner) is unreachable (OwnerDiedError and ObjectFetchTimedOutError are
    ObjectLostErrors), also when wrapped in a RayTaskError. Submitting such a unit again can succeed."""
    from ray.exceptions import NodeDiedError, ObjectLostError, WorkerCrashedError

    return isinstance(_cause(err), NodeDiedError | WorkerCrashedError | ObjectLostError)


def describe(err: BaseException) -> str:
    """``Type: first line`` of the exception behind ``err``: Ray's text ends in context (owner and node ids,
    a traceback), while its type and first line say what happened."""
    cause = _cause(err)
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return type(cause).__name__ + (f": {lines[0]}" if lines else "")


class RayExecutor:
    """Units as Ray tasks on a cluster (``address``: "auto" or HOST:PORT) or on a local Ray that starts
    here and stops with ``close()`` (address None); a Ray this process already runs is used as it is.
    Joining a cluster, the driver takes the cluster's authentication mode (``cluster_auth_mode``). A unit
    lost to the system is submitted again, up to ``max_retries`` times, with any shared input that was
    lost put again; one whose code raises is not, and is reported by name and type while the others
    finish."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float = 0,
                 max_retries: int = 3, num_cpus: int | None = None):
        if cpus_per_task <= 0 or gpus_per_task < 0:
            raise ValueError(f"--cpus-per-task must be > 0 and --gpus-per-task >= 0; got {cpus_per_task}, "
                             f"{gpus_per_task}")
        if address not in (None, "auto"):
            _reachable(address)
        if _ray_missing():
            raise UsageError("--executor ray needs Ray: pip install 'gradaudit[dist]' (or pip install ray)")
        running = "ray" in sys.modules and sys.modules["ray"].is_initialized()
        if address is not None and not running:
            _use_auth_mode(cluster_auth_mode(address))
        import ray

        self._ray = ray
        self._shared, self._values, self._replaced, self._loose = {}, {}, {}, set()
        self.cpus_per_task, self.gpus_per_task, self.max_retries = cpus_per_task, gpus_per_task, max_retries
        self._started = not running
        if self._started:
            try:
                self._connect(address, num_cpus)
            except ConnectionError as err:
                raise ValueError(f"--ray-address {address}: no Ray cluster found ({err}); start one with "
                                 "`ray start --head`") from None
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
        tensor can take their ids). The driver keeps ``value`` too, to put it again should the store
        lose it: a pinned one as long as its pins, an unpinned one until the end of the next ``run``."""
        if not pins:
            ref = self._ray.put(value)
            self._values[ref.hex()] = value
            self._loose.add(ref.hex())
            return ref
        key = tuple(id(p) for p in pins)
        if key not in self._shared:
            ref = self._ray.put(value)
            self._shared[key] = (pins, ref)
            self._values[ref.hex()] = value
        return self._shared[key][1]

    def _put_again(self, unit: Unit, err: BaseException) -> Unit:
        """``unit`` with every shared input that was lost replaced by a new copy: the one whose loss ``err``
        reports is put in the store again (once, however many units need it), and later ``share``s of its
        pins return the new copy."""
        lost = getattr(_cause(err), "object_ref_hex", None)
        if lost in self._values:
            value = self._values.pop(lost)
            ref = self._ray.put(value)
            self._values[ref.hex()] = value
            if lost in self._loose:
                self._loose.add(ref.hex())
            self._replaced = {old: ref if new.hex() == lost else new for old, new in self._replaced.items()}
            self._replaced[lost] = ref
            self._shared = {key: (pins, ref if old.hex() == lost else old)
                            for key, (pins, old) in self._shared.items()}
        args = tuple(self._replaced.get(a.hex(), a) if isinstance(a, self._ray.ObjectRef) else a for a in unit.args)
        return Unit(unit.name, unit.function, args)

    def run(self, units: list[Unit], on_result: Callable[[Unit, object], None]) -> None:
        """Every unit as a Ray task, ``on_result`` called here as each finishes. A unit lost to the system
        goes again (``max_retries`` times at most, each said on stdout; Ray's own task retries are off, so
        one bound counts them all); a UnitsFailed at the end names every unit that failed for good, with
        its exception's type and first line."""
        ray = self._ray
        remote = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_retries=0,
                            retry_exceptions=False)(_run_with_threads)
        threads = max(1, int(self.cpus_per_task))
        pending = {remote.remote(threads, unit.function, *unit.args): (unit, unit, 0) for unit in units}
        failed = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit, submitted, retries = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:
                    if lost_to_the_system(err) and retries < self.max_retries:
                        print(f"ray: {unit.name} lost to the system ({describe(err)}); submitting it again "
                              f"({retries + 1} of {self.max_retries})", flush=True)
                        submitted = self._put_again(submitted, err)
                        pending[remote.remote(threads, submitted.function, *submitted.args)] = (
                            unit, submitted, retries + 1)
                    else:
                        tries = f" (after {retries} resubmissions)" if retries else ""
                        failed.append(f"{unit.name}: {describe(err)}{tries}")
                    continue
                on_result(unit, result)
        self._forget_loose()
        if failed:
            raise UnitsFailed(f"{len(failed)} of {len(units)} units failed for good (the others are stored; rerun "
                              f"to retry): " + "; ".join(failed))

    def _forget_loose(self) -> None:
        """Drop the unpinned shared values (and their new copies) once the run that used them is over."""
        self._replaced = {old: new for old, new in self._replaced.items()
                          if old not in self._loose and new.hex() not in self._loose}
        for loose in self._loose:
            self._values.pop(loose, None)
        self._loose.clear()

    def close(self) -> None:
        self._shared.clear()
        self._values.clear()
        self._replaced.clear()
        self._loose.clear()
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
