"""tumortrace.gradio_uploads: the app hears of each upload to its server once Gradio has stored it; the
served app decodes it then, and its prediction uses that decode."""
import hashlib
import io
import json
import logging
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")
import gradio.routes  # noqa: E402

import app  # noqa: E402
from apputil import free_port  # noqa: E402
from tumortrace import gradio_uploads, uploads  # noqa: E402

httpx = pytest.importorskip("httpx")


def _upload(http: "httpx.Client", url: str, name: str, data: bytes) -> str:
    response = http.post(url + "gradio_api/upload", files={"files": (name, data, "image/png")})
    response.raise_for_status()
    return response.json()[0]


def _call_predict(http: "httpx.Client", url: str, stored: str, model: str, opacity: float) -> list:
    """The app's /predict for an uploaded file, over Gradio's HTTP API: its outputs."""
    payload = {"data": [{"path": stored, "meta": {"_type": "gradio.FileData"}}, model, opacity, 1]}
    event = http.post(url + "gradio_api/call/predict", json=payload).json()["event_id"]
    lines = http.get(url + f"gradio_api/call/predict/{event}").text.splitlines()
    return json.loads(next(line[5:] for line in lines if line.startswith("data:") and "[" in line))


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((24, 40), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _calls_on_thread(monkeypatch, module, name: str, thread_prefix: str):
    """Replace ``module.name`` with a wrapper that records, per call, whether it ran on a thread whose name
    starts with ``thread_prefix``; the event is set once such a call has returned."""
    calls, returned_there, real = [], threading.Event(), getattr(module, name)

    def recording(*args, **kwargs):
        there = threading.current_thread().name.startswith(thread_prefix)
        result = real(*args, **kwargs)
        calls.append(there)
        if there:
            returned_there.set()
        return result

    monkeypatch.setattr(module, name, recording)
    return calls, returned_there


def _served_app(trained_model, tmp_path, seed: int, **build_options):
    """The app for ``trained_model`` served from this process, and a random gray slice to upload."""
    from tumortrace.registry import build_registry

    slice_file = tmp_path / "slice.png"
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (70, 90), dtype=np.uint8)).save(slice_file)
    demo = app.build_app(build_registry(str(trained_model), None), **build_options)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, quiet=True)
    return demo, f"http://127.0.0.1:{port}/", slice_file


@pytest.fixture
def two_blocks():
    """Two small apps served from this process: uploads go to the same folder, only one has a hook."""
    served = []
    for _ in range(2):
        with gr.Blocks() as demo:
            gr.File()
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, prevent_thread_lock=True)
        served.append((demo, f"http://127.0.0.1:{port}/"))
    yield served
    for demo, _ in served:
        demo.close()


def test_the_hook_hears_of_each_upload_to_its_own_app_once_stored(two_blocks, caplog):
    (hooked, hooked_url), (plain, plain_url) = two_blocks
    heard = []

    def callback(paths):
        heard.append([(p, Path(p).read_bytes()) for p in paths])  # stored before the response goes out

    assert gradio_uploads.call_after_upload(hooked, callback)
    assert gradio_uploads.describe(hooked) == "uploads decoded as they arrive"
    assert gradio_uploads.describe(hooked, classified=True).startswith("uploads decoded and classified as they")
    assert gradio_uploads.describe(plain) == "uploads decoded when a prediction asks"
    assert gradio_uploads.describe(plain, classified=True) == "uploads decoded when a prediction asks"
    with httpx.Client(timeout=30) as http:
        stored = _upload(http, hooked_url, "a.png", _png(1))
        assert heard == [[(stored, _png(1))]]
        from gradio.processing_utils import hash_seed
        assert Path(stored).parent.name == hashlib.sha256(hash_seed + _png(1)).hexdigest()  # content-addressed
        _upload(http, plain_url, "b.png", _png(2))
        assert len(heard) == 1  # the other app's upload is not this hook's

        def broken(paths):
            raise RuntimeError("hook failed")

        assert gradio_uploads.call_after_upload(hooked, broken)
        with caplog.at_level(logging.ERROR, logger="tumortrace.gradio_uploads"):
            response = http.post(hooked_url + "gradio_api/upload", files={"files": ("c.png", _png(3), "image/png")})
        assert response.status_code == 200 and Path(response.json()[0]).read_bytes() == _png(3)  # still answered
        assert "the app's upload hook failed" in caplog.text and "hook failed" in caplog.text


def test_nothing_is_wrapped_where_gradios_upload_route_is_not_the_one_it_knows(monkeypatch):
    async def upload_fn(request, upload_dir, max_file_size):  # another Gradio's signature
        return [], [], []

    monkeypatch.setattr(gradio_uploads, "_gradio_function", None)
    monkeypatch.setattr(gradio.routes, "upload_fn", upload_fn)
    with gr.Blocks() as demo:
        gr.File()
    assert not gradio_uploads.call_after_upload(demo, print)
    assert gradio.routes.upload_fn is upload_fn and gradio_uploads.describe(demo).endswith("when a prediction asks")
    assert gradio_uploads._route_calls_upload_fn(gradio.routes.App)

    class ElsewhereApp:  # a route that saves uploads some other way: replacing the name would not reach it
        @staticmethod
        def create_app():
            async def upload_file(request):
                return await request.form()
            return upload_file

    assert not gradio_uploads._route_calls_upload_fn(ElsewhereApp)
    assert not gradio_uploads._route_calls_upload_fn(types.SimpleNamespace())


@pytest.mark.slow
def test_the_served_app_decodes_an_upload_as_it_arrives_and_its_prediction_uses_that(trained_model, tmp_path,
                                                                                    monkeypatch):
    from tumortrace.checkpoint import load
    from tumortrace.images import load_image
    from tumortrace.inference import predict_image

    calls, decoded_ahead = _calls_on_thread(monkeypatch, uploads, "load_image", "tumortrace-decode")
    demo, url, slice_file = _served_app(trained_model, tmp_path, 3)
    try:
        assert gradio_uploads.describe(demo) == "uploads decoded as they arrive"
        with httpx.Client(timeout=60) as http:
            stored = _upload(http, url, "slice.png", slice_file.read_bytes())
            assert decoded_ahead.wait(30)  # before anybody asked for a prediction
            deadline = time.monotonic() + 30
            while Path(stored).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not Path(stored).exists()  # and deleted once decoded: Gradio's call takes the path alone
            outputs = _call_predict(http, url, stored, trained_model.name, 0.45)
        assert calls == [True]  # decoded once, as it arrived: the prediction used that decode
        expected = predict_image(load(trained_model, for_inference=True), load_image(slice_file), "fast-cam")
        got = {c["label"]: c["confidence"] for c in outputs[0]["confidences"]}
        assert got["malignant"] == pytest.approx(expected.p_malignant, abs=1e-4)
    finally:
        demo.close()


def test_an_upload_to_an_app_without_blocks_is_answered_as_gradio_answers_it():
    import asyncio

    stored = (["/up/h/a.png", "/up/h2/b.png"], ["/tmp/x"], ["/up/h2/b.png"])

    async def gradio_upload_fn(request, upload_dir, max_file_size, upload_id, force_move=True, upload_progress=None):
        return stored

    class NoBlocks:
        def get_blocks(self):
            raise ValueError("No Blocks has been configured for this app.")  # gradio.routes.App's message

    class WithBlocks:
        def get_blocks(self):
            return blocks

    heard, blocks = [], gr.Blocks()
    gradio_uploads._callbacks[blocks] = heard.append
    wrapped = gradio_uploads._wrap(gradio_upload_fn)
    for app_object in (NoBlocks(), types.SimpleNamespace(), WithBlocks()):
        request = types.SimpleNamespace(app=app_object)
        assert asyncio.run(wrapped(request, "/up", 10, None, force_move=False)) == stored
    assert heard == [["/up/h/a.png"]]  # only the app with the hook; not the file Gradio moves after the response


@pytest.mark.slow
@pytest.mark.parametrize("classify_ahead", [True, False])
def test_the_served_app_classifies_an_upload_as_it_arrives_for_the_click_that_asks_for_exactly_that(
        trained_model, tmp_path, monkeypatch, caplog, classify_ahead):
    """A browser's upload is classified before the click (with the model and opacity last asked for); the click
    takes that result, with outputs identical to a prediction of its own; a click with another opacity, or
    the same upload asked for again, runs its own; with ``classify_ahead`` off, every click does."""
    renders, rendered_ahead = _calls_on_thread(monkeypatch, app, "render", "tumortrace-ahead")
    demo, url, slice_file = _served_app(trained_model, tmp_path, 4, classify_ahead=classify_ahead)

    def predict(http, stored, opacity):
        return _call_predict(http, url, stored, trained_model.name, opacity)

    try:
        with httpx.Client(timeout=60) as http, caplog.at_level(logging.INFO, logger="tumortrace.app"):
            stored = _upload(http, url, "slice.png", slice_file.read_bytes())
            assert rendered_ahead.wait(30) == classify_ahead  # before anybody asked for a prediction
            first = predict(http, stored, 0.45)
            other = predict(http, stored, 0.6)
            again = predict(http, stored, 0.45)
        assert renders == ([True, False, False] if classify_ahead else [False] * 3)  # True: on the ahead thread
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("predict:")]
        assert ("classified as it arrived" in said[0]) == classify_ahead
        assert all("classified now" in line for line in said[1:])
        assert first[0] == again[0]  # the probabilities
        # Content-addressed files: the same path is the same bytes, whoever rendered them; another opacity differs.
        assert [first[1]["path"], first[2]["path"]] == [again[1]["path"], again[2]["path"]]
        assert other[1]["path"] != first[1]["path"] and other[2]["path"] == first[2]["path"]
    finally:
        demo.close()


@pytest.mark.slow
@pytest.mark.skipif(app.available_cores() < 2, reason="on one core a prediction's share is every core already")
@pytest.mark.parametrize("wide_alone", [True, False])
def test_the_served_app_runs_a_prediction_that_runs_alone_on_every_core(trained_model, tmp_path, monkeypatch, caplog,
                                                                       wide_alone):
    """An API client's prediction that runs alone (nothing classified ahead for it) runs on the thread at every
    core, with the trunk built for it (tumortrace.lone), to the same bytes as at the app's own count; with
    ``wide_alone`` off, on its handler's thread."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from tumortrace.checkpoint import load
    from tumortrace.images import load_image

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the app's count on 2 cores, which main() sets before loading the models
    renders, _ = _calls_on_thread(monkeypatch, app, "render", "tumortrace-lone")
    try:
        with caplog.at_level(logging.INFO):
            demo, url, slice_file = _served_app(trained_model, tmp_path, 6, classify_ahead=False, wide_alone=wide_alone)
            try:
                deadline = time.monotonic() + 60  # the trunk is built in the background
                while (wide_alone and "a trunk for predictions running alone" not in caplog.text
                       and time.monotonic() < deadline):
                    time.sleep(0.1)
                with httpx.Client(timeout=60) as http:
                    stored = _upload(http, url, "slice.png", slice_file.read_bytes())
                    outputs = _call_predict(http, url, stored, trained_model.name, 0.45)
            finally:
                demo.close()
        assert renders == [wide_alone]  # True: on the thread at every core
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("predict:")]
        assert (f"alone on {app.available_cores()} torch threads" in said[0]) == wide_alone, said
        with ThreadPoolExecutor(1) as encoder:  # the app's own count, on this thread
            own = app.render(load(trained_model, for_inference=True), load_image(slice_file), "fast-cam", 0.45,
                             encoder)
        # Content-addressed files: the same paths are the same bytes.
        assert [outputs[1]["path"], outputs[2]["path"]] == list(app.write_outputs(own))
        assert {c["label"]: c["confidence"] for c in outputs[0]["confidences"]} == pytest.approx(own.probabilities,
                                                                                                abs=1e-9)
    finally:
        torch.set_num_threads(before)
