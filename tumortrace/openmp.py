"""How long torch's idle OpenMP threads spin, for a process that makes predictions (the app, the predict CLI, the
benchmarks).

Torch's CPU kernels run on libgomp's thread team. When a parallel region ends, each worker thread spins,
waiting for the next one, for ``GOMP_SPINCOUNT`` iterations before it sleeps: 300,000 by default, 0.4–4.5 ms
on the CI-class machines here (``benchmarks/openmp_spin.py``). Inside a forward pass that keeps the next
layer's start cheap. After the forward, though, the CAM, the overlay and the next request's decoding run on
the calling thread alone while the worker burns the other core, and on these 2-vCPU virtual machines that
made the numpy and OpenCV steps after a forward slower (the JET lookup 0.31 against 0.18 ms, ad hoc).
Predict + CAM + overlay against a plain forward, each timed right after a run of its own: EfficientNet-Lite0
1.42–1.44× with libgomp's default against 1.36–1.39× with ``SPIN_COUNT``, ResNet18 1.30–1.32× against
1.25–1.29×, the forward no slower (benchmarks/HISTORY.md). ``SPIN_COUNT`` spins at most ~0.3 ms here; not
spinning at all (``OMP_WAIT_POLICY=passive``) made the forward 5–15% slower.

libgomp reads its environment once, when it is loaded (with ``import torch``), so :func:`shorten_spin` must
run before that. A setting the operator's environment gives (``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``)
is left as it is. Only predictions on more than one torch thread are affected: the app's default of one
thread per prediction (two at once on two cores) has no worker threads to spin.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

SPIN_COUNT = 20_000
_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
_RUNTIMES = ("libgomp", "libiomp5", "libomp")  # GNU (torch's Linux wheels), Intel, LLVM


def loaded_runtimes() -> list[str]:
    """The OpenMP runtimes mapped into this process, from /proc/self/maps (Linux; elsewhere none are seen).
    Wheels may bundle one under a hashed name, e.g. libgomp-a34b3233.so.1."""
    try:
        with open("/proc/self/maps") as maps:
            files = {line.split()[-1].rsplit("/", 1)[-1] for line in maps if "/" in line}
    except OSError:
        return []
    return [r for r in _RUNTIMES if any(f.startswith((r + ".", r + "-")) for f in files)]


def shorten_spin(spin_count: int = SPIN_COUNT) -> bool:
    """Set ``GOMP_SPINCOUNT`` for the libgomp that torch will load (Linux). Returns whether it was set: not
    when the environment sets the spin already, nor once an OpenMP runtime is loaded (it would not read it)."""
    if (not sys.platform.startswith("linux") or any(name in os.environ for name in _VARIABLES)
            or loaded_runtimes()):
        return False
    os.environ["GOMP_SPINCOUNT"] = str(spin_count)
    return True


def describe(applied: bool) -> str:
    """For the log, once torch is imported: what :func:`shorten_spin` did, and whether torch's OpenMP is the
    libgomp that reads it."""
    runtimes = loaded_runtimes()
    if applied:
        count = os.environ.get("GOMP_SPINCOUNT", "?")
        if "libgomp" in runtimes:
            return f"OpenMP idle threads spin {count} times before sleeping"
        return (f"GOMP_SPINCOUNT={count} set, but torch's OpenMP is {', '.join(runtimes)}, which ignores it"
                if runtimes else f"GOMP_SPINCOUNT={count} set; no OpenMP runtime loaded yet")
    given = [f"{name}={os.environ[name]}" for name in _VARIABLES if name in os.environ]
    return f"OpenMP spin as the environment sets it ({', '.join(given)})" if given else "OpenMP spin left as found"


def idle_worker_cpu_ms(samples: int = 20, sleep_s: float = 0.05) -> float:
    """How long torch's OpenMP workers spin after a parallel region: the CPU time this process burns beyond
    the calling thread's while the caller sleeps ``sleep_s`` after a 512² matmul (median of ``samples``).
    At most ``sleep_s`` per worker; about 0 for workers that sleep at once."""
    import torch

    a = torch.randn(512, 512)
    for _ in range(5):
        a @ a
    burnt = []
    for _ in range(samples):
        a @ a
        process, caller = time.process_time(), time.thread_time()
        time.sleep(sleep_s)
        # max: the two clocks are read microseconds apart, so a worker that slept at once can come out below 0
        burnt.append(max(0.0, (time.process_time() - process) - (time.thread_time() - caller)))
    return statistics.median(burnt) * 1e3
