"""Middleware put around a started Starlette/FastAPI app (Gradio's server), where ``add_middleware`` no longer can."""
from __future__ import annotations

from typing import Callable


def wrap_outermost(app, layer: type, make: Callable) -> bool:
    """Put ``make(current_stack)`` (an instance of ``layer``) outside every middleware of a started ``app``:
    Starlette builds its middleware stack on the first request and cannot add middleware after that. Done
    once: an app whose outermost layer is already a ``layer`` is left as it is. False, and nothing changed,
    for an app without Starlette's ``middleware_stack``."""
    if not hasattr(app, "middleware_stack") or not hasattr(app, "build_middleware_stack"):
        return False
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    if not isinstance(app.middleware_stack, layer):
        app.middleware_stack = make(app.middleware_stack)
    return True
