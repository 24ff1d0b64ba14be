"""An upload classified as soon as it is decoded, before anybody clicks Classify: in memory, for the click.

A browser uploads a file when it is chosen and asks for its prediction when Classify is clicked, a third of
a second later at the quickest and usually seconds. :class:`tumortrace.uploads.DecodeAhead` decodes the
upload in that gap; :class:`ClassifyAhead` then runs the whole of what the click will ask for (the app's
``render``: prediction, CAM, the overlay and the slice, encoded, as bytes) with the model and opacity the
click most likely sends: those of the last prediction asked for, or of the model a page last selected (the
page says so when it opens and whenever its choice changes). The click takes that result when it asks for
exactly that model and opacity and its image is the very one decoded ahead (same upload, frame 1), and only
then: any other request renders its own, and the result is dropped. Either way the outputs are identical.

Only while ``idle()`` says the app is idle (the app's: no prediction running or waiting in Gradio's queue;
under load it would take a core from the predictions), one at a time, on a thread of its own. Results stay
in memory only (never on disk: the click's request writes the files it returns) and are dropped once taken,
after ``ttl_s``, or beyond ``keep`` (the oldest first). ``render``'s result must not hold the image: only a
weak reference to it is kept here, so that what the decoded uploads take in memory stays bounded by
``tumortrace.uploads.RecentUploads``.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

log = logging.getLogger(__name__)


class ClassifyAhead:
    """``render(model_name, opacity, image)`` run ahead for each upload decoded while the app is idle.

    :meth:`start` is called with each upload's key and decoded first frame (by ``DecodeAhead``, on its
    thread); :meth:`take` by the request that classifies an upload; :meth:`expect` with the model and
    opacity a page or a request named last.
    """

    def __init__(self, render: Callable[[str, float, Any], Any], model: str | None, opacity: float,
                 idle: Callable[[], bool] = lambda: True, keep: int = 4, ttl_s: float = 300.0):
        self.render, self.idle, self.keep, self.ttl_s = render, idle, keep, ttl_s
        self.expected = (model, opacity)  # one tuple: read and replaced whole, from any thread
        self.taken = 0  # results a request used
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tumortrace-ahead")
        # key -> (when, the image, weakly: a large upload is not kept alive here, (model, opacity), render)
        self._entries: OrderedDict[str, tuple[float, weakref.ref, tuple, Future]] = OrderedDict()
        self._lock = threading.Lock()

    def expect(self, model: str | None = None, opacity: float | None = None) -> None:
        """The model and (or) opacity the next click most likely asks for."""
        old_model, old_opacity = self.expected
        self.expected = (old_model if model is None else model, old_opacity if opacity is None else opacity)

    def _drop_old(self, now: float) -> None:
        while self._entries and (len(self._entries) > self.keep
                                 or now - next(iter(self._entries.values()))[0] > self.ttl_s):
            self._entries.popitem(last=False)

    def start(self, key: str, image) -> None:
        """Render upload ``key``'s decoded first frame ``image`` for the expected model and opacity, if idle."""
        model, opacity = self.expected
        if model is None or not self.idle():
            return
        with self._lock:
            if self._rendering():
                return  # one at a time: a second would take the core a request may need
            future = self._pool.submit(self._render, model, opacity, image)
            self._entries[key] = (time.monotonic(), weakref.ref(image), (model, opacity), future)
            self._entries.move_to_end(key)
            self._drop_old(time.monotonic())

    def _render(self, model: str, opacity: float, image):
        try:
            return self.render(model, opacity, image)
        except Exception:  # the click's request renders its own and meets the error, if any, itself
            log.debug("classifying an upload ahead failed", exc_info=True)
            return None

    def take(self, key: str, image, model: str, opacity: float):
        """The result rendered ahead for upload ``key`` if it was rendered from this very ``image`` with
        ``model`` and ``opacity`` (waiting for it if under way), else None. Either way it is no longer held."""
        with self._lock:
            self._drop_old(time.monotonic())
            entry = self._entries.pop(key, None)
        if entry is None or entry[1]() is not image or entry[2] != (model, opacity):
            return None
        result = entry[3].result()
        if result is not None:
            with self._lock:
                self.taken += 1
        return result

    def busy(self) -> bool:
        """A render under way."""
        with self._lock:
            return self._rendering()

    def _rendering(self) -> bool:  # with the lock held
        return any(not entry[3].done() for entry in self._entries.values())

    def held(self) -> int:
        """Results held or under way."""
        with self._lock:
            return len(self._entries)
