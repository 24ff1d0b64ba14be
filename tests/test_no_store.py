"""tumortrace.no_store: Gradio's file route answers with Cache-Control: no-store; nothing else changes."""
import asyncio

from tumortrace.no_store import NoStoreFiles, wrap_file_responses


def _served(path: str, headers: list) -> list:
    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"x"})

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(NoStoreFiles(inner)({"type": "http", "path": path}, None, send))
    return sent


def test_file_route_responses_are_not_stored_and_others_untouched():
    got = _served("/gradio_api/file=/tmp/x/image.png", [(b"etag", b'"1"'), (b"Cache-Control", b"public, max-age=60")])
    assert got[0]["headers"] == [(b"etag", b'"1"'), (b"cache-control", b"no-store")]
    assert got[1] == {"type": "http.response.body", "body": b"x"}
    other = _served("/config", [(b"etag", b'"1"')])
    assert other[0]["headers"] == [(b"etag", b'"1"')]


def test_wraps_a_starlette_app_once_and_refuses_what_is_not_one():
    from starlette.applications import Starlette

    app = Starlette()
    assert wrap_file_responses(app) and isinstance(app.middleware_stack, NoStoreFiles)
    first = app.middleware_stack
    assert wrap_file_responses(app) and app.middleware_stack is first  # not wrapped twice
    assert not wrap_file_responses(object())
