"""Peak resident memory of a CPU call on Linux, as every benchmark here measures it: reset the peak
(``/proc/self/clear_refs``), run, read ``VmHWM`` from ``/proc/self/status``. It counts torch's CPU tensors,
which Python's tracemalloc does not see."""

import gc


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
