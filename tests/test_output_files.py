"""tumortrace.output_files: a plain GET for an output the app just wrote is answered before Gradio's routes;
every other request reaches Gradio as before."""
import asyncio
from pathlib import Path

import pytest

from tumortrace.output_files import (FILE_ROUTE, RecentOutputs, ServeRecentOutputs, describe, gradio_app_is_open,
                                     serve_recent_outputs)


def _request(layer, path: str, method: str = "GET", headers=(), query: bytes = b"") -> tuple[list, bool]:
    """What ``layer`` sent for one request, and whether the app behind it was called."""
    reached = []

    async def gradio(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 403, "headers": [(b"etag", b'"g"')]})
        await send({"type": "http.response.body", "body": b"gradio"})

    layer.app = gradio
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": list(headers)}
    asyncio.run(layer(scope, None, send))
    return sent, bool(reached)


@pytest.fixture
def outputs(tmp_path):
    recent = RecentOutputs(capacity=3)
    files = {}
    for name, data in (("gradcam.jpg", b"\xff\xd8jpeg bytes"), ("image.png", b"\x89PNG bytes")):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_bytes(data)
        files[name] = folder / name
        recent.add(str(folder / name))
    return recent, files


def test_a_recent_output_is_answered_with_its_bytes_without_reaching_gradio(outputs):
    recent, files = outputs
    layer = ServeRecentOutputs(None, recent, open_to_all=lambda: True)
    for name, content_type in (("gradcam.jpg", b"image/jpeg"), ("image.png", b"image/png")):
        sent, reached = _request(layer, FILE_ROUTE + str(files[name]))
        assert not reached
        start, body = sent
        headers = dict(start["headers"])
        assert start["status"] == 200 and body["body"] == files[name].read_bytes()
        assert headers[b"content-type"] == content_type
        assert headers[b"content-length"] == str(files[name].stat().st_size).encode()
        assert headers[b"content-disposition"] == f'inline; filename="{name}"'.encode()
        assert headers[b"cache-control"] == b"no-store"


@pytest.mark.parametrize("change", ["HEAD", "range", "query", "login", "deleted", "unknown", "traversal", "route"])
def test_everything_else_goes_to_gradio(outputs, tmp_path, change):
    recent, files = outputs
    path = str(files["image.png"])
    method, headers, query, open_to_all = "GET", [], b"", True
    if change == "HEAD":
        method = "HEAD"
    elif change == "range":
        headers = [(b"Range", b"bytes=0-3")]
    elif change == "query":
        query = b"download=1"
    elif change == "login":
        open_to_all = False
    elif change == "deleted":  # swept from Gradio's cache: Gradio answers as it would
        files["image.png"].unlink()
    elif change == "unknown":  # a file the app did not write, beside one it did
        (tmp_path / "image" / "other.png").write_bytes(b"secret")
        path = str(tmp_path / "image" / "other.png")
    elif change == "traversal":
        path = str(files["image.png"].parent / ".." / "image" / "image.png")
    layer = ServeRecentOutputs(None, recent, open_to_all=lambda: open_to_all)
    route = "/file=" if change == "route" else FILE_ROUTE
    sent, reached = _request(layer, route + path, method, headers, query)
    assert reached and sent[1]["body"] == b"gradio"


def test_only_the_last_outputs_are_remembered(tmp_path):
    recent = RecentOutputs(capacity=2)
    paths = [str(tmp_path / f"{k}" / "image.png") for k in range(3)]
    for path in paths:
        recent.add(path)
    recent.add(paths[1])  # written again (same bytes, same name): the newest again
    assert len(recent) == 2 and recent.content_type(paths[0]) is None
    assert recent.content_type(paths[1]) == recent.content_type(paths[2]) == b"image/png"
    recent.add(str(tmp_path / "3" / "gradcam.JPG"))
    assert recent.content_type(paths[2]) is None and recent.content_type(paths[1]) == b"image/png"


@pytest.mark.parametrize("path", ["image.png", "/tmp/x/notes.txt", "/tmp/x/page.html", "/tmp/x/image",
                                  '/tmp/x/a"b.png', "/tmp/x/sl\u00efce.png", "/tmp/x/a\r\nSet-Cookie: x.png"])
def test_only_absolute_png_and_jpeg_paths_with_plain_names_are_taken(path):
    """The name goes into the Content-Disposition header as it is: no quote, line break or non-ASCII."""
    with pytest.raises(ValueError, match="absolute path to a PNG or JPEG output with a plain file name"):
        RecentOutputs().add(path)
    with pytest.raises(ValueError, match="capacity"):
        RecentOutputs(capacity=0)


def test_wraps_a_started_app_once_and_follows_its_login():
    from starlette.applications import Starlette

    from tumortrace.no_store import NoStoreFiles, wrap_file_responses

    app = Starlette()
    app.auth = app.auth_dependency = None
    assert describe(app) == "output images through Gradio's file route"
    assert serve_recent_outputs(app, RecentOutputs()) and isinstance(app.middleware_stack, ServeRecentOutputs)
    first = app.middleware_stack
    assert serve_recent_outputs(app, RecentOutputs()) and app.middleware_stack is first
    assert wrap_file_responses(app) and isinstance(app.middleware_stack, NoStoreFiles)  # as app.launch does
    assert describe(app) == "output images answered before Gradio's routes"
    assert first.open_to_all() and gradio_app_is_open(app)
    app.auth = [("reviewer", "pass")]  # Gradio sets it when launched with a login
    assert not first.open_to_all()
    assert describe(app) == "output images through Gradio's file route (a login is set)"
    assert not serve_recent_outputs(object(), RecentOutputs())


def test_the_app_registers_what_it_writes(tmp_path, monkeypatch):
    import numpy as np

    import app as app_module

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setattr(app_module, "RECENT_OUTPUTS", RecentOutputs())
    written = [app_module.store_output(app_module.encode_png(np.zeros((4, 5), np.uint8)), "image.png"),
               app_module.store_output(app_module.encode_jpeg(np.zeros((4, 5, 3), np.uint8)), "gradcam.jpg")]
    assert [app_module.RECENT_OUTPUTS.content_type(p) for p in written] == [b"image/png", b"image/jpeg"]
    assert all(Path(p).is_file() and Path(p).is_relative_to(tmp_path) for p in written)


@pytest.mark.slow
@pytest.mark.parametrize("login", [False, True], ids=["open", "login"])
def test_a_launched_app_answers_its_outputs_itself_only_without_a_login(tmp_path, monkeypatch, login):
    """Over HTTP: without a login the output comes from this layer (no ETag: Gradio's file response sends one)
    and anything else from Gradio; with a login, Gradio's route and its login check answer every request."""
    gr = pytest.importorskip("gradio")
    import httpx

    import app as app_module
    from apputil import free_port

    png = tmp_path / "3ac2" / "image.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG not really, but the bytes the app wrote")
    monkeypatch.setattr(app_module, "RECENT_OUTPUTS", RecentOutputs())
    app_module.RECENT_OUTPUTS.add(str(png))
    with gr.Blocks() as demo:
        gr.Markdown("outputs")
    port = free_port()
    app_module.launch(demo, server_name="127.0.0.1", server_port=port, quiet=True, allowed_paths=[str(tmp_path)],
                      auth=("reviewer", "s3cret") if login else None)
    url, file_url = f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/gradio_api/file={png}"
    try:
        with httpx.Client(timeout=30) as http:
            if login:
                assert describe(demo.app) == "output images through Gradio's file route (a login is set)"
                assert http.get(file_url).status_code == 401
                assert http.post(url + "login", data={"username": "reviewer", "password": "s3cret"}).status_code == 200
            else:
                assert describe(demo.app) == "output images answered before Gradio's routes"
            got, head = http.get(file_url), http.head(file_url)
            assert got.status_code == 200 and got.content == png.read_bytes()
            assert got.headers["cache-control"] == head.headers["cache-control"] == "no-store"
            assert ("etag" in got.headers) is login and "etag" in head.headers
            assert got.headers["content-type"] == head.headers["content-type"] == "image/png"
            assert got.headers["content-disposition"] == head.headers["content-disposition"]
    finally:
        demo.close()
