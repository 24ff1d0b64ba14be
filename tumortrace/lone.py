"""A prediction that runs alone uses every core: on a thread of its own, with a copy of each model's served
trunk built for that many torch threads.

Why: the app runs up to ``concurrency`` predictions at once, each on cores ÷ concurrency torch threads, and
the served trunk is compiled for that count (tumortrace.scripted): what 8 clients need. A prediction that
runs alone then leaves the other core idle. An API client calling right after its upload waits for it; so
does an upload classified ahead (tumortrace.ahead: the app runs that one here too, as it starts only while
the app is idle). One such client, against ``--no-wide-alone`` (``benchmarks/ab.py``, 500 pairs in each start
order): 0.90× the round trip (benchmarks/HISTORY.md).

Cost: the copies' memory, +45–49 MiB of the server's resident memory for the two shipped models (the frozen
graph's constants and oneDNN's packed weights are per copy), and their building, ~0.75 s on this thread in
the background once the app is built: until a model's copy is ready its lone predictions run as any other.
A copy is used only if its outputs equal the served trunk's (within ``FUSED_TOLERANCE``; identical to the
last bit for the shipped models, tested).

Thread counts: torch's is per thread once a thread has used it (its OpenMP backend sets a thread's own count
from the process-wide one at the thread's first use), and ``torch.set_num_threads`` sets both the calling
thread's and the process-wide one. So this module's thread takes its count first, and the caller's is set
back at once: threads started later (the server's workers) start at the app's count, as before.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

import torch

from .checkpoint import LoadedModel
from .fusion import FUSED_TOLERANCE, feature_error
from .scripted import ScriptedTrunk, script_trunk

log = logging.getLogger(__name__)

T = TypeVar("T")


class LonePredictions:
    """A thread running at ``threads`` torch threads, and each model's trunk built for it (:meth:`build`)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tumortrace-lone")
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        caller = torch.get_num_threads()
        try:
            self._pool.submit(_use_threads, threads).result()
        finally:
            torch.set_num_threads(caller)  # the process-wide count, which the next new thread starts from

    def build(self, models: dict[str, LoadedModel]) -> Future:
        """Build each model's copy on this thread, in the background; done when the future is. Call it on a
        thread running at the app's count: each served trunk's reference outputs are computed here first."""
        return self._pool.submit(self._build_all, {name: (loaded, reference_features(loaded))
                                                   for name, loaded in models.items()})

    def _build_all(self, models: dict[str, tuple[LoadedModel, tuple | None]]) -> None:
        built = {}
        for name, (loaded, reference) in models.items():
            try:
                wide = widened(loaded, self.threads, reference)
            except Exception:  # its lone predictions run as any other
                log.exception("%s: no trunk for %d torch threads", name, self.threads)
                continue
            if wide is not None:
                built[name] = wide
        with self._lock:  # all at once: a lone prediction handed to this thread would wait for the next build
            self._models.update(built)

    def model(self, name: str) -> LoadedModel | None:
        """Model ``name`` as this thread runs it, once ready (None before, or where it could not be built)."""
        with self._lock:
            return self._models.get(name)

    def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on this thread."""
        return self._pool.submit(fn, *args).result()


def _use_threads(n: int) -> None:
    torch.get_num_threads()  # this thread's own count, from now on
    torch.set_num_threads(n)


def reference_features(loaded: LoadedModel) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(an input, the served trunk's features of it), computed on the calling thread, for :func:`widened`; None
    for a trunk that runs at any thread count."""
    trunk = loaded.model.features
    if not isinstance(trunk, ScriptedTrunk):
        return None
    unseen = torch.randn(trunk.shape, generator=torch.Generator().manual_seed(1)).to(trunk.dtype)
    with torch.inference_mode():
        return unseen, trunk(unseen)


def widened(loaded: LoadedModel, threads: int, reference: tuple[torch.Tensor, torch.Tensor] | None
            ) -> LoadedModel | None:
    """``loaded`` with its served trunk rebuilt for ``threads`` torch threads (call it on a thread running at
    that count; ``reference``: :func:`reference_features`, computed where the served trunk runs at its own
    count); ``loaded`` itself where the trunk runs at any count (eager, or built for ``threads`` already);
    None, with a warning, where the rebuilt trunk's outputs differ from the served one's."""
    model = loaded.model
    trunk = model.features
    if not isinstance(trunk, ScriptedTrunk) or trunk.threads == threads or reference is None:
        return loaded
    example = torch.randn(trunk.shape, generator=torch.Generator().manual_seed(0)).to(trunk.dtype)
    wide = script_trunk(trunk.eager, example)
    unseen, want = reference
    with torch.inference_mode():
        error = feature_error(want, wide(unseen))
    if error > FUSED_TOLERANCE:
        log.warning("%s: the trunk built for %d torch threads changed the features by %.2g (relative): its lone "
                    "predictions run as any other", loaded.config.get("arch"), threads, error)
        return None
    served = copy.copy(model)  # shares every module and parameter, and the eager trunk, with the served model
    served._modules = dict(model._modules)
    served._modules["features"] = wide
    log.info("%s: a trunk for predictions running alone, %s (features %s)", loaded.config.get("arch"),
             wide.description, "identical" if error == 0 else f"within {error:.1g}")
    return dataclasses.replace(loaded, model=served)
