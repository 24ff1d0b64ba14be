"""Uploaded slices: decoded once, held in memory only, and deleted from disk as soon as they are decoded.

Gradio stores an upload at ``<upload folder>/<sha256 of a per-process seed and its bytes>/<name>``;
``upload_key`` (the last two parts) names its bytes and, by its suffix, how they are read.
:class:`RecentUploads` keeps what decoding each upload gave, :func:`read_upload` is what a prediction
calls, and :class:`DecodeAhead` decodes an upload as soon as it arrives, before anybody asks for its
prediction.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from .images import ImageLoadError, LoadedImage, check_frame_number, load_image

log = logging.getLogger(__name__)


def upload_key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def frame_key(key: str, frame: int) -> str:
    """Where what decoding frame ``frame`` of upload ``key`` gave is kept in :class:`RecentUploads`."""
    return f"{key} frame {frame}"


class RecentUploads:
    """What decoding each upload gave (the image, or the ImageLoadError) per frame, and the bytes of each
    multi-frame upload: in memory only, keyed by the content hash in the upload's path.

    Gradio stores uploads by content (folder = sha256 of the bytes), so two requests with identical
    bytes (two reviewers clicking one example) share one file: after the first request deletes it, the
    second is answered from here (the image, or the same specific error for a file that cannot be used)
    instead of "cannot be opened". The race's window is a request's wait in the queue: the cap (~35
    BUSI-sized slices) covers seconds of distinct uploads under load. A multi-frame file's bytes stay so
    that its other frames can be chosen without uploading it again. The app also keeps here the Grad-CAM
    map of each answer (an array, at the model's input size), so that a new opacity redraws its overlay
    without running the model again. Bounded in bytes and in age since last use; nothing goes to disk. The
    newest entry stays even when it alone is above the cap.
    """

    def __init__(self, ttl_s: float = 300.0, max_bytes: int = 64 * 2**20):
        self.ttl_s, self.max_bytes = ttl_s, max_bytes
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._items and now - next(iter(self._items.values()))[0] > self.ttl_s:
            self._items.popitem(last=False)
        while len(self._items) > 1 and sum(_nbytes(v[1]) for v in self._items.values()) > self.max_bytes:
            self._items.popitem(last=False)

    def put(self, key: str, value: LoadedImage | ImageLoadError | bytes | np.ndarray) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            self._expire(time.monotonic())

    def get(self, key: str) -> LoadedImage | ImageLoadError | bytes | np.ndarray | None:
        """The value, whose age starts again (the oldest-used goes first)."""
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            item = self._items.get(key)
            if item is None:
                return None
            self._items[key] = (now, item[1])
            self._items.move_to_end(key)
            return item[1]

    def record(self, key: str, frame: int, outcome: LoadedImage | ImageLoadError, data: bytes) -> None:
        """What decoding frame ``frame`` of the upload ``key`` (bytes ``data``) gave."""
        if isinstance(outcome, ImageLoadError):
            outcome = ImageLoadError(outcome.path, outcome.reason)  # without the traceback (and its pixels)
        self.put(frame_key(key, frame), outcome)
        if isinstance(outcome, LoadedImage) and outcome.frames > 1:
            self.put(f"{key} bytes", data)


def _nbytes(value: LoadedImage | ImageLoadError | bytes | np.ndarray) -> int:
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, np.ndarray):
        return value.nbytes
    return value.pixels.nbytes if isinstance(value, LoadedImage) else 0


def _earlier_outcome(recent: RecentUploads, key: str, path: Path) -> LoadedImage | None:
    """What decoding an identical upload gave: its image, or its error raised again; None if nothing."""
    earlier = recent.get(key)
    if earlier is not None and not isinstance(earlier, LoadedImage):
        raise ImageLoadError(path, earlier.reason) from None
    return earlier


def read_upload(path: Path, recent: RecentUploads, frame: int = 1, ahead: DecodeAhead | None = None) -> LoadedImage:
    """Frame ``frame`` of an upload, whose file is deleted as soon as it is decoded (no patient image stays
    on disk).

    The file goes only after the outcome is in ``recent``: an identical upload (same file) that finds it
    gone then finds the outcome, where deleting it right after reading left a decode's length (~5 ms) in
    which the other request could find neither ("cannot be opened", seen with 8 clients sending the same
    examples). Choosing another frame of a multi-frame upload sends the same path again, whose file is
    gone: its bytes are in ``recent``. With ``ahead``, a request whose upload is being decoded as it
    arrived first waits for that decode; a decode ahead, like a request's own, leaves the file deleted and
    its outcome (and a multi-frame file's bytes) in ``recent``."""
    key = upload_key(path)
    outcome_key = frame_key(key, frame)
    try:
        if ahead is not None:
            ahead.wait(key)
        try:
            data = path.read_bytes()
        except OSError as exc:
            if (earlier := _earlier_outcome(recent, outcome_key, path)) is not None:
                return earlier
            data = recent.get(f"{key} bytes")
            if data is None:
                if isinstance(first := recent.get(frame_key(key, 1)), LoadedImage):
                    check_frame_number(path, frame, first.frames)
                raise ImageLoadError(path, f"cannot be opened ({exc.strerror or exc}); the app deletes an upload "
                                           "once it is decoded: upload the file again") from None
        try:
            image = load_image(path, frame=frame, data=data)
        except ImageLoadError as exc:
            # Same key, same bytes, same decoding: what an identical upload got is this upload's outcome,
            # whatever failed here.
            if (earlier := _earlier_outcome(recent, outcome_key, path)) is not None:
                return earlier
            recent.record(key, frame, exc, data)
            raise
        recent.record(key, frame, image, data)
        return image
    finally:
        forget_upload(path)


def forget_upload(path: Path) -> None:
    """Delete an upload as soon as it is decoded: no patient image stays on disk."""
    temp_root = Path(os.environ["GRADIO_TEMP_DIR"]).resolve()
    try:
        resolved = path.resolve()
        if resolved.is_relative_to(temp_root):
            # The emptied content-hash folder stays: a concurrent identical upload may be renaming into it.
            resolved.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not delete an upload: %s", exc.strerror)


class DecodeAhead:
    """Frame 1 of each upload decoded as soon as it arrives, on a thread of its own, for the request that
    classifies it; the file deleted once decoded.

    A browser uploads a file when it is chosen and asks for its prediction when Classify is clicked; an API
    client uploads, then calls. The decode (4.4 ms of a lone prediction's ~20 in the handler for the
    766×588 example) can run in that gap, on a core nothing else uses. :meth:`start` is given the stored
    files' paths (by the app's upload hook, ``tumortrace.gradio_uploads``; it only hands them to the
    thread). The outcome (with the bytes of a multi-frame file) goes into ``recent``, as
    :func:`read_upload` puts a request's own decode there, and the file is deleted, as a request deletes
    the file it decodes: an upload chosen and never classified leaves no image on disk (without this it
    stayed until Gradio's cache sweep, up to ~6 minutes). The request that classifies the upload finds
    its file gone and the outcome in ``recent``, for as long as ``recent`` keeps it (then it is asked to
    upload the file again). :meth:`wait` is for a request that comes while its upload is being decoded:
    it waits for the rest of that decode, or cancels one not yet started (the request decodes the file).

    Only while ``idle()`` says no prediction is running: under load no core is idle, and a decode ahead
    would only compete with the predictions for it (each upload is still decoded once either way). At most
    ``keep`` decodes wait or run at once; an upload beyond that, or one whose identical bytes are being
    decoded, is decoded by its request. Done decodes are not held here: the outcomes' memory is
    ``recent``'s, bounded in bytes and age. ``then(key, image)`` is called on the decode's thread with each
    image decoded (``tumortrace.ahead.ClassifyAhead.start``): it must only hand work on and return.
    """

    def __init__(self, recent: RecentUploads, idle: Callable[[], bool] = lambda: True, keep: int = 2,
                 then: Callable[[str, LoadedImage], None] | None = None):
        self.recent, self.idle, self.keep, self.then = recent, idle, keep, then
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tumortrace-decode")
        self._futures: dict[str, Future] = {}  # upload key -> its decode, until done or waited for
        self._lock = threading.Lock()

    def start(self, paths: list[str]) -> None:
        """Decode these uploads' first frames (called on the server's event loop: it must not block)."""
        submitted = []
        with self._lock:
            for p in paths:
                path = Path(p)
                key = upload_key(path)
                if key in self._futures or len(self._futures) >= self.keep or not self.idle():
                    continue
                self._futures[key] = future = self._pool.submit(self._decode, path)
                submitted.append((key, future))
        for key, future in submitted:  # outside the lock: a callback on a decode already done runs here
            future.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: str, future: Future) -> None:
        with self._lock:
            if self._futures.get(key) is future:
                del self._futures[key]

    def _decode(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError:
            return  # its request says why
        try:
            outcome = load_image(path, frame=1, data=data)
        except ImageLoadError as exc:
            outcome = exc
        except Exception:  # the file stays: its request decodes it and fails the way it would without this
            log.exception("decoding an upload as it arrived failed")
            return
        key = upload_key(path)
        self.recent.record(key, 1, outcome, data)
        forget_upload(path)
        if self.then is not None and isinstance(outcome, LoadedImage):
            try:
                self.then(key, outcome)
            except Exception:  # the upload's request does without
                log.exception("the hook after decoding an upload ahead failed")

    def wait(self, key: str) -> None:
        """Until upload ``key``'s decode under way is done; one not yet started is cancelled."""
        with self._lock:
            future = self._futures.pop(key, None)
        if future is not None and not future.cancel():
            future.result()

    def pending(self) -> int:
        """Decodes waiting or under way."""
        with self._lock:
            return len(self._futures)
