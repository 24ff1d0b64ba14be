"""A hook on Gradio's upload route: a function of the app's called with the paths of each upload's files
once Gradio has stored them, before the upload's response goes out.

The browser uploads a file as soon as it is chosen, and asks for the prediction only when Classify is
clicked; an API client uploads, then calls. Work on the upload itself (decoding it) can start in that gap
instead of after the click. Gradio has no such hook: its ``/upload`` route calls
``gradio.routes.upload_fn`` (a module-level name, looked up on every request), which parses the form,
moves each file to ``<upload folder>/<sha256 of a seed and its bytes>/<name>`` and returns where they went.
:func:`call_after_upload` wraps that function once per process and calls, per request, the callback
registered for the app (the ``gr.Blocks``) that served it. Files Gradio could not rename into place (another
file system) are moved by a background task after the response and are left out.

The callback runs on the server's event loop: it must only hand work to a thread and return. An exception
in it is logged and the upload is answered as if there were no hook. Where Gradio's route no longer calls
``upload_fn``, or its signature has changed, nothing is wrapped and the caller is told.
"""
from __future__ import annotations

import inspect
import logging
import types
import weakref
from typing import Callable

log = logging.getLogger(__name__)

# upload_fn's parameters as Gradio 6.31 (requirements.txt) defines them: the wrapper passes them through.
GRADIO_PARAMETERS = ["request", "upload_dir", "max_file_size", "upload_id", "force_move", "upload_progress"]
_callbacks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # gr.Blocks -> callback(list of paths)
_gradio_function = None  # Gradio's upload_fn, once wrapped


def _route_calls_upload_fn(app_class) -> bool:
    """True if Gradio's ``upload_file`` route (a function nested in ``App.create_app``) calls ``upload_fn``
    by its module-level name, so that replacing the name reaches it."""
    stack = [getattr(getattr(app_class, "create_app", None), "__code__", None)]
    while stack:
        code = stack.pop()
        if not isinstance(code, types.CodeType):
            continue
        if code.co_name == "upload_file":
            return "upload_fn" in code.co_names
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return False


def _wrap(original):
    async def upload_fn(request, upload_dir, *args, **kwargs):
        output_files, files_to_copy, locations = await original(request, upload_dir, *args, **kwargs)
        callback = None
        try:
            callback = _callbacks.get(request.app.get_blocks())
        except (AttributeError, TypeError, ValueError):  # not a Gradio app, or one without blocks
            pass
        if callback is not None:
            later = {str(p) for p in locations}  # moved into place by a background task, after the response
            ready = [str(p) for p in output_files if str(p) not in later]
            try:
                callback(ready)
            except Exception:  # the upload must still be answered
                log.exception("the app's upload hook failed; the upload is answered without it")
        return output_files, files_to_copy, locations

    upload_fn.wrapped = original
    return upload_fn


def call_after_upload(blocks, callback: Callable[[list[str]], None]) -> bool:
    """Have ``callback(paths)`` called for each upload to ``blocks``'s server, with the stored files' paths.

    Register it before ``blocks.launch()`` so that no upload comes first. False, and nothing registered,
    where Gradio's upload route is not the one this module wraps."""
    global _gradio_function
    import gradio.routes as routes

    current = getattr(routes, "upload_fn", None)
    if _gradio_function is None:
        if (current is None or not inspect.iscoroutinefunction(current)
                or list(inspect.signature(current).parameters) != GRADIO_PARAMETERS
                or not _route_calls_upload_fn(routes.App)):
            return False
        _gradio_function = current
        routes.upload_fn = _wrap(current)
    elif getattr(current, "wrapped", None) is not _gradio_function:
        return False  # someone replaced the name after this module wrapped it
    _callbacks[blocks] = callback
    return True


def gradio_function():
    """Gradio's own ``upload_fn``, wrapped or not."""
    import gradio.routes as routes

    return _gradio_function or routes.upload_fn


def hooked(blocks) -> bool:
    """Whether ``blocks``'s server calls its upload callback."""
    return blocks in _callbacks


def describe(blocks, classified: bool = False) -> str:
    """For the app's "serving" log line; ``classified``: the callback also classifies (``tumortrace.ahead``)."""
    if not hooked(blocks):
        return "uploads decoded when a prediction asks"
    return ("uploads decoded and classified as they arrive while idle (model and opacity last asked for)"
            if classified else "uploads decoded as they arrive")
