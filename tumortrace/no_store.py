"""``Cache-Control: no-store`` on the files Gradio serves from its cache, so that browsers do not keep them.

Gradio's file route (``/gradio_api/file=...``) answers with an ETag and a Last-Modified date and no
Cache-Control, which lets a browser keep the response in its disk cache and reuse it by its own heuristics.
What the app serves there are the slice as the model saw it (a lossless image of the upload) and the Grad-CAM
overlay: the server deletes them after minutes, and a browser should not keep them longer.
"""
from __future__ import annotations

from .asgi import wrap_outermost

FILE_ROUTE = "/file="
NO_STORE = (b"cache-control", b"no-store")


class NoStoreFiles:
    """ASGI middleware: responses to GET/HEAD requests for Gradio's file route carry ``Cache-Control: no-store``
    (in place of any Cache-Control they had); every other request passes through untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or FILE_ROUTE not in scope.get("path", ""):
            return await self.app(scope, receive, send)

        async def send_no_store(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != NO_STORE[0]]
                message = {**message, "headers": [*headers, NO_STORE]}
            await send(message)

        return await self.app(scope, receive, send_no_store)


def wrap_file_responses(app) -> bool:
    """Put :class:`NoStoreFiles` outside every middleware of a started Starlette/FastAPI ``app``
    (:func:`tumortrace.asgi.wrap_outermost`). False, and nothing changed, for an app without Starlette's
    ``middleware_stack``."""
    return wrap_outermost(app, NoStoreFiles, NoStoreFiles)
