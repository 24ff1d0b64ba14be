"""glibc malloc settings for a process that serves predictions (the app, ``tumortrace.predict``, the benchmarks).

Two of glibc's defaults cost a serving process, both measured (benchmarks/HISTORY.md):

- **Arenas.** Each request thread gets an arena of its own (up to 8 per core); decoding slices of varying
  sizes fragments them and the server's memory drifts up. Capped at 2.
- **Trimming.** glibc hands free memory at the top of a heap back to the OS once it exceeds a trim threshold,
  which it keeps at twice its mmap threshold, which it raises to the largest mmapped block freed so far (up
  to 32 MiB). So a process's history decides it: in some processes it stays at a few MiB, below the
  activation buffers one forward pass allocates and frees, and every prediction gives that memory back and
  faults it in again (an in-process EfficientNet-Lite0 prediction: ~3,900 page faults and 15.5 ms against
  none and 12.2 ms, depending on the process). Both thresholds are fixed at glibc's own ceiling (mmap 32 MiB,
  trim 64 MiB), so every process is the fast one; what it keeps is at most what glibc itself would keep
  once its threshold had grown that far.

A setting the operator's environment gives (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, or the same in ``GLIBC_TUNABLES``) is left as it is.
"""
from __future__ import annotations

import os
import sys

MMAP_THRESHOLD = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its own dynamic threshold stops
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # the ratio glibc keeps when it moves the threshold itself

# name: (mallopt parameter, environment variable, GLIBC_TUNABLES name)
_SETTINGS = {
    "arena_max": (-8, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max"),  # M_ARENA_MAX
    "mmap_threshold": (-3, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),  # M_MMAP_THRESHOLD
    "trim_threshold": (-1, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),  # M_TRIM_THRESHOLD
}


def tune_for_serving(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD,
                     trim_threshold: int = TRIM_THRESHOLD) -> dict[str, bool]:
    """Apply the settings above, before the serving threads start. Returns which were applied: none off glibc
    (``mallopt`` then does not exist) and none that the environment sets."""
    values = {"arena_max": arenas, "mmap_threshold": mmap_threshold, "trim_threshold": trim_threshold}
    applied = dict.fromkeys(values, False)
    if sys.platform != "linux":
        return applied
    import ctypes
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: no glibc
        return applied
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    for name, value in values.items():
        param, variable, tunable = _SETTINGS[name]
        if variable in os.environ or tunable + "=" in tunables:
            continue
        applied[name] = mallopt(param, value) == 1
    return applied


def describe(applied: dict[str, bool]) -> str:
    """For the log: which settings :func:`tune_for_serving` applied."""
    names = [name for name, done in applied.items() if done]
    return f"glibc malloc set for serving ({', '.join(names)})" if names else "malloc settings left as found"
