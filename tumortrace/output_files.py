"""The app's own output images, answered at the server's outermost layer instead of by Gradio's file route.

A prediction's page fetches its two images (the Grad-CAM overlay and the slice as the model saw it) from
Gradio's ``/gradio_api/file=<path>`` right after the result arrives. That route takes each request through
Gradio's middleware, FastAPI's routing (~80 routes), the login dependency, Gradio's path checks and a file
response that reads in a worker thread: ~2 ms of a lone request per image on this project's CPUs, where
reading the file takes ~0.1 ms (benchmarks/HISTORY.md, sixteenth session).

The app knows exactly which files it wrote. :class:`RecentOutputs` holds the paths of the last ones (paths
only, never their bytes), and :class:`ServeRecentOutputs` answers a plain ``GET`` for one of them with the
file as it is on disk. Everything else goes on to Gradio unchanged, so its checks stay the only ones that
decide there: ``HEAD``, a ``Range`` or a query string, any file the app did not write or wrote longer ago
than the last ``capacity`` outputs, a file Gradio's cache sweep has deleted (the sweep, not this layer,
decides how long an image can be fetched), and every request to an app with a login (Gradio's login
check is not repeated here: such an app serves all its files through Gradio).
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import PurePath

from .asgi import wrap_outermost
from .no_store import NO_STORE

FILE_ROUTE = "/gradio_api/file="
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")  # a file name that goes into a header as it is
CONTENT_TYPES = {".png": b"image/png", ".jpg": b"image/jpeg", ".jpeg": b"image/jpeg"}


class RecentOutputs:
    """The paths of the last ``capacity`` output images the app wrote, each with its content type.

    ``add`` is called from the prediction threads, ``content_type`` from the server's event loop."""

    def __init__(self, capacity: int = 4096):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._paths: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, path: str) -> None:
        """Remember ``path`` (absolute, as the page will ask for it) as the newest output."""
        pure = PurePath(path)
        content_type = CONTENT_TYPES.get(pure.suffix.lower())
        if content_type is None or not pure.is_absolute() or not SAFE_NAME.fullmatch(pure.name):
            raise ValueError(f"not an absolute path to a PNG or JPEG output with a plain file name: {path!r}")
        with self._lock:
            self._paths[path] = content_type
            self._paths.move_to_end(path)
            while len(self._paths) > self.capacity:
                self._paths.popitem(last=False)

    def content_type(self, path: str) -> bytes | None:
        """The content type of ``path`` if it is one of the recent outputs, else None."""
        with self._lock:
            return self._paths.get(path)

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths)


class ServeRecentOutputs:
    """ASGI middleware: a plain ``GET`` of Gradio's file route for one of ``outputs`` is answered here with the
    file's bytes (``Content-Type``, ``Content-Length``, ``Content-Disposition: inline`` as Gradio's response
    has them, and ``Cache-Control: no-store`` as ``tumortrace.no_store`` gives Gradio's); every other
    request, and every request while ``open_to_all()`` is false, goes to ``app``.

    The file is read on the event loop: it was written a moment ago (in the page cache) and is at most a few
    hundred KiB, less time than the hop to a worker thread Gradio's file response makes for it."""

    def __init__(self, app, outputs: RecentOutputs, open_to_all):
        self.app = app
        self.outputs = outputs
        self.open_to_all = open_to_all

    async def __call__(self, scope, receive, send):
        data = content_type = None
        if (scope["type"] == "http" and scope.get("method") == "GET" and not scope.get("query_string")
                and scope.get("path", "").startswith(FILE_ROUTE)):
            path = scope["path"][len(FILE_ROUTE):]
            content_type = self.outputs.content_type(path)
            if content_type is not None and self.open_to_all() and not _asks_for_a_range(scope):
                data = _read(path)
        if data is None:
            return await self.app(scope, receive, send)
        name = PurePath(path).name.encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", content_type), (b"content-length", str(len(data)).encode()),
            (b"content-disposition", b'inline; filename="' + name + b'"'), (b"accept-ranges", b"bytes"),
            NO_STORE]})
        await send({"type": "http.response.body", "body": data})


def _asks_for_a_range(scope) -> bool:
    return any(key.lower() == b"range" for key, _ in scope.get("headers", ()))


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:  # swept from the cache, or never there: Gradio answers as it would
        return None


def gradio_app_is_open(app) -> bool:
    """True while Gradio's ``app`` requires no login (neither a password nor an auth dependency)."""
    return getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None


def serve_recent_outputs(app, outputs: RecentOutputs) -> bool:
    """Put :class:`ServeRecentOutputs` outside every middleware of a started Gradio ``app``
    (:func:`tumortrace.asgi.wrap_outermost`). False, and nothing changed, for an app without Starlette's
    ``middleware_stack``."""
    return wrap_outermost(app, ServeRecentOutputs,
                          lambda stack: ServeRecentOutputs(stack, outputs, lambda: gradio_app_is_open(app)))


def describe(app) -> str:
    """For the app's "serving" log line."""
    stack = getattr(app, "middleware_stack", None)
    while stack is not None and not isinstance(stack, ServeRecentOutputs):
        stack = getattr(stack, "app", None)
    if stack is None:
        return "output images through Gradio's file route"
    if not gradio_app_is_open(app):
        return "output images through Gradio's file route (a login is set)"
    return "output images answered before Gradio's routes"
