"""Peak resident memory of a CPU call on Linux, as every benchmark here measures it: reset the peak
(``/proc/self/clear_refs``), run, read ``VmHWM`` from ``/proc/self/status``. It counts torch's CPU tensors,
which Python's tracemalloc does not see. ``in_fresh_process`` runs a case in a process of its own, so one case's
peak and allocator state do not colour the next."""

import gc
import json
import subprocess
import sys


def status_mb(field: str) -> float:
    """A size field of /proc/self/status (``VmRSS``, ``VmHWM``) in MB; 0 where it is missing."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> float:
    """Reset the process's peak RSS (Linux clear_refs) and return the current RSS in MB."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return status_mb("VmRSS")


def in_fresh_process(script: str, arguments: list[str], env: dict | None = None):
    """The JSON that ``python script *arguments`` prints last, run in a fresh process; None (and the error's last
    line on stderr) when it fails."""
    out = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"  (failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]})", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])
