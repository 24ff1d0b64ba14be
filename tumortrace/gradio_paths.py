"""Gradio's file-path checks with its configured folders resolved once a process, not on every check.

Before Gradio serves or caches a file it checks where the file lies: in the upload or cache folder, in an
allowed or blocked path, among its static files, in the working directory (``gradio.utils.is_in_or_equal``,
25 times for one prediction from a browser in Gradio 6.31). Each check resolves both of its paths with
``Path.resolve()``: Python's ``realpath``, one ``lstat`` system call per path component, each releasing and
taking back the interpreter lock that the model's threads also want. The second path is always one of the
app's configured places (Gradio's own static icons deep in site-packages, its cache folder, the working
directory), the same few strings every time; 255 ``lstat`` and 59 ``stat`` calls ran on the event loop
per prediction.

:func:`resolve_folders_once` has those checks resolve the configured path once (an LRU cache keyed by the
path as given) and the file being checked on every call, as before: the same answers for every request,
as long as the configured folders are not turned into symbolic links elsewhere while the app runs
(nothing here does that; the app's own folders are made at start). Where Gradio's function is not the
one this was written against, nothing is changed and the log says so.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import os
from pathlib import Path

# sha256 of gradio.utils.is_in_or_equal's source in Gradio 6.31 (requirements.txt): this module replaces it
# only while it still says what this one repeats.
GRADIO_SOURCE_SHA256 = "c0b9e2998b4b9dc1691f73db64628866cf2e79d58da187b504d742c4ca51c3bf"
_gradio_function = None  # Gradio's is_in_or_equal, once replaced


@functools.lru_cache(maxsize=256)
def resolved_folder(path: str) -> Path:
    """``path`` made absolute and resolved, once per process (configured folders and files only)."""
    return Path(os.path.abspath(path)).resolve()


def is_in_or_equal(path_1: str | Path, path_2: str | Path) -> bool:
    """True if ``path_1`` is ``path_2`` or lies inside it, after both are resolved (Gradio's rule).

    ``path_2`` is a configured place, resolved once (:func:`resolved_folder`); ``path_1``, the file asked
    about, is resolved on every call."""
    path_1 = Path(os.path.abspath(str(path_1))).resolve()
    try:
        path_1.relative_to(resolved_folder(str(path_2)))
        return True
    except ValueError:
        return False


def source_sha256(function) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    except (OSError, TypeError):
        return None


def resolve_folders_once() -> bool:
    """Put :func:`is_in_or_equal` in place of Gradio's wherever Gradio's modules refer to it (a module that
    Gradio imports later takes it from ``gradio.utils``). False, and nothing changed, where Gradio's function
    is not the one this module repeats."""
    import sys

    import gradio.utils

    global _gradio_function
    original = gradio.utils.is_in_or_equal
    if original is is_in_or_equal:
        return True
    if source_sha256(original) != GRADIO_SOURCE_SHA256:
        return False
    _gradio_function = original
    gradio.utils.is_in_or_equal = is_in_or_equal
    for name, module in list(sys.modules.items()):
        if name.startswith("gradio.") and getattr(module, "is_in_or_equal", None) is original:
            module.is_in_or_equal = is_in_or_equal
    return True


def gradio_function():
    """Gradio's own ``is_in_or_equal``, replaced or not (the tests compare the two)."""
    import gradio.utils

    return _gradio_function or gradio.utils.is_in_or_equal


def applied() -> bool:
    import gradio.utils

    return gradio.utils.is_in_or_equal is is_in_or_equal


def describe() -> str:
    """For the app's "serving" log line."""
    return ("Gradio's configured folders resolved once for its path checks" if applied()
            else "Gradio's path checks as they are")
