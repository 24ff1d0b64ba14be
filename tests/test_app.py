"""The real app over HTTP through gradio_client: predictions, errors, privacy, login, Hub, share."""
import hashlib
import io
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apputil import client_files_in, new_client, running_app, serving_line
from conftest import run_cli
from hostile import CASES, write_case

pytestmark = pytest.mark.slow
gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module", autouse=True)
def client_files(tmp_path_factory):
    with client_files_in(tmp_path_factory.mktemp("gradio-client")) as folder:
        yield folder


@pytest.fixture(scope="module")
def app(trained_model, tmp_path_factory):
    temp = tmp_path_factory.mktemp("gradio-temp")
    with running_app("--model", str(trained_model), temp_dir=temp) as (url, proc):
        yield url, proc, temp, trained_model.name


def _predict(client, path, model_name, opacity=0.5):
    return client.predict(gradio_client.handle_file(str(path)), model_name, opacity, api_name="/predict")


def test_predict_probabilities_overlay_provenance(app, manifest_data, trained_model, tmp_path):
    url, proc, _, name = app
    src = sorted((manifest_data / "malignant" / "images").glob("*.png"))[0]
    wide = tmp_path / "wide slice.png"
    Image.open(src).resize((150, 60)).save(wide)  # non-square: the overlay must keep 5:2
    label, heat, raw, decision, prov = _predict(new_client(url), wide, name)
    conf = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(conf) == {"benign", "malignant"} and sum(conf.values()) == pytest.approx(1, abs=1e-6)
    h, w = np.asarray(Image.open(heat)).shape[:2]
    assert (w, h) == (150, 60) and np.asarray(Image.open(raw)).shape[:2] == (60, 150)
    assert Image.open(heat).format == "JPEG" and Image.open(raw).format == "PNG"
    shown, sent = np.asarray(Image.open(raw)), np.asarray(Image.open(wide).convert("L"))
    assert shown.ndim == 2 and np.array_equal(shown, sent)  # the slice itself: lossless, one channel
    assert "validated threshold" in decision and "not a diagnosis" in decision
    assert "weights sha256" in prov and "fast-cam" in prov and "TumorTrace" in prov
    # Served with BatchNorm folded, and says so; the answer is the checkpoint's own within 1e-4.
    from tumortrace.checkpoint import load_model
    from tumortrace.inference import predict_file
    assert "BatchNorm folded and a TorchScript trunk" in prov
    as_trained = predict_file(load_model(trained_model), wide)
    assert conf["malignant"] == pytest.approx(as_trained.p_malignant, abs=1e-4)
    # The request threads ask for the threads the trunk was built with (set before loading; tumortrace.scripted).
    assert "built for" not in proc.log_path.read_text()


def test_predictions_only_through_the_queue(app, manifest_data):
    """Gradio (off Spaces) would also run a queued event at once for a POST to /run/<name>, past the queue's
    concurrency limit and length: one client could start any number of predictions at the same time."""
    import httpx

    url, _, _, name = app
    path = _raw_upload(url, sorted((manifest_data / "benign" / "images").glob("*.png"))[0])
    with httpx.Client(timeout=60) as http:
        payload = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, name, 0.45, 1]}
        direct = http.post(url + "gradio_api/run/predict", json=payload)
        assert direct.status_code == 404 and "join the queue" in direct.text
        queued = http.post(url + "gradio_api/call/predict", json=payload)  # the same request, queued
        with http.stream("GET", url + f"gradio_api/call/predict/{queued.json()['event_id']}") as events:
            lines = list(events.iter_lines())
    assert "event: complete" in lines, lines


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_hostile_case_through_the_app(app, manifest_data, tmp_path, case):
    """Bad files: a specific error; awkward but valid files: a prediction. The server keeps serving."""
    url, proc, _, name = app
    client = new_client(url)
    path = write_case(tmp_path, case)
    kind, expect = CASES[case][1]
    if kind == "error":
        with pytest.raises(Exception) as info:
            _predict(client, path, name)
        assert expect in str(info.value)
    else:
        label = _predict(client, path, name)[0]
        assert sum(c["confidence"] for c in label["confidences"]) == pytest.approx(1, abs=1e-6)
    good = sorted((manifest_data / "benign" / "images").glob("*.png"))[0]
    assert _predict(client, good, name)[0]["confidences"]
    assert proc.poll() is None


def test_dicom_mr_upload_shows_window_and_no_identity(app, tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    url, proc, _, name = app
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    ds.PatientName, ds.PatientID, ds.InstitutionName = "DOE^JANE", "PID-93847", "St Example Hospital"
    path = tmp_path / "scan.dcm"
    ds.save_as(path, enforce_file_format=True)
    outputs = _predict(new_client(url), path, name)
    decision = outputs[3]
    assert "window: center 600 / width 1600" in decision
    log = proc.log_path.read_text()
    for value in ("DOE", "JANE", "PID-93847", "Example Hospital"):
        assert value not in json.dumps(outputs) and value not in log


def test_uploads_are_decoded_and_classified_as_they_arrive_by_default(app):
    url, proc, temp, model_name = app
    assert ("; uploads decoded and classified as they arrive while idle (model and opacity last asked for);"
            in serving_line(proc.log_path))  # tests/test_gradio_uploads.py, tests/test_ahead.py


def test_uploads_are_deleted_after_the_response(app, manifest_data, tmp_path):
    url, _, temp, name = app
    src = sorted((manifest_data / "benign" / "images").glob("*.png"))[3]
    unique = tmp_path / "patient.png"
    arr = np.asarray(Image.open(src)).copy()
    arr[0, 0] = 7  # bytes no other test uploads
    Image.fromarray(arr).save(unique)
    digest = hashlib.sha256(unique.read_bytes()).hexdigest()
    _predict(new_client(url), unique, name)
    on_disk = [p for p in temp.rglob("*") if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == digest]
    assert on_disk == []
    assert not any(p.name == "patient.png" for p in temp.rglob("*"))
    # Gradio 6.31's gr.File leaks an empty temp file per call; the app's UploadFile must not
    assert [p for p in temp.rglob("*") if p.is_file() and p.stat().st_size == 0] == []


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGTERM and SIGHUP as POSIX sends them")
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_a_stopped_app_leaves_no_images_on_disk(trained_model, manifest_data, tmp_path, stop):
    """`docker stop` and systemd send SIGTERM, a closed terminal SIGHUP: the app's own folder of uploads and
    output images goes with it, as on Ctrl-C."""
    if signal.getsignal(getattr(signal, stop)) is signal.SIG_IGN:
        pytest.skip(f"this test run ignores {stop} (e.g. under nohup), so the app it starts does too, by design")
    src = sorted((manifest_data / "benign" / "images").glob("*.png"))[0]
    with running_app("--model", str(trained_model), env={"GRADIO_TEMP_DIR": None, "TMPDIR": str(tmp_path)}) as (url, proc):
        _predict(new_client(url), src, trained_model.name)
        own = list(tmp_path.glob("tumortrace-gradio-*"))
        assert len(own) == 1 and any(p.suffix in (".png", ".jpg") for p in own[0].rglob("*")), own
        proc.send_signal(getattr(signal, stop))
        assert proc.wait(timeout=60) == 0, proc.log_path.read_text()[-2000:]
    assert not own[0].exists()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP as POSIX sends it")
def test_a_signal_the_app_was_started_to_ignore_stays_ignored():
    import app
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        assert app.stop_on_signals() == ["SIGTERM"]
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is app.stop_like_ctrl_c
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_a_process_that_only_imports_the_app_removes_its_folder(tmp_path):
    env = {"TMPDIR": str(tmp_path)}
    code = "import os; os.environ.pop('GRADIO_TEMP_DIR', None); import app; print(app._OWN_TEMP_DIR)"
    made = Path(run_cli("-c", code, env=env, check=True).stdout.splitlines()[-1])
    assert made.parent == tmp_path and not made.exists()


def test_unknown_model_name_is_an_error(app, manifest_data):
    url, _, _, _ = app
    good = sorted((manifest_data / "benign" / "images").glob("*.png"))[0]
    with pytest.raises(Exception):
        _predict(new_client(url), good, "no-such-model")


def test_gradios_traffic_monitoring_is_off(app):
    """Gradio's /monitoring endpoints (a traffic summary, a dashboard behind a key printed to the log) are on by
    default and readable without a login on a local app; the app has no use for them."""
    url = app[0]
    for path in ("monitoring", "monitoring/summary"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + path, timeout=10)
        assert err.value.code == 403


def test_gradios_run_history_is_off(app):
    """Gradio 6 records every prediction (file name, results, image links) in the browser with no expiry, and its
    /runs page offers to save runs, uploads included, to a Hugging Face bucket; the browser half is tested in
    tests/test_browser.py."""
    url = app[0]
    with urllib.request.urlopen(url + "config", timeout=10) as response:
        assert json.load(response)["run_history"] is False
    for path in ("gradio_api/runs", "gradio_api/run-history/records", "gradio_api/run-history/buckets"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + path, timeout=10)
        assert err.value.code == 404, path


def test_output_images_are_served_not_to_be_stored(app, manifest_data):
    """The slice as seen (a lossless image of the upload) and the overlay: browsers would otherwise keep them in
    their disk cache (Gradio sends an ETag and Last-Modified, no Cache-Control). A plain GET, as the page makes,
    is answered before Gradio's routes (tumortrace.output_files: no ETag), a HEAD by Gradio's file route."""
    import httpx

    url, proc, _, name = app
    assert "output images answered before Gradio's routes" in serving_line(proc.log_path)
    path = _raw_upload(url, sorted((manifest_data / "malignant" / "images").glob("*.png"))[1])
    outputs, error = _raw_predict(url, path, name, 1)
    assert error is None
    with httpx.Client(timeout=60) as http:
        for out in outputs[1:3]:
            got = {}
            for method in ("GET", "HEAD"):
                got[method] = response = http.request(method, out["url"])
                assert response.status_code == 200 and response.headers["cache-control"] == "no-store", method
            assert "etag" not in got["GET"].headers and "etag" in got["HEAD"].headers
            assert got["GET"].content == Path(out["path"]).read_bytes()
            assert got["GET"].headers["content-length"] == got["HEAD"].headers["content-length"]
        assert "no-store" not in http.get(url + "config").headers.get("cache-control", "")


def test_share_without_login_refuses_to_start():
    proc = run_cli("app.py", "--share", "--port", "0", timeout=120, env={"TUMORTRACE_AUTH": ""})
    assert proc.returncode == 2
    assert "refusing to open a share link without a login" in proc.stderr


def test_login_required_for_page_and_api_and_offline_share_keeps_serving(trained_model, manifest_data, tmp_path):
    env = {"TUMORTRACE_AUTH": "reviewer:s3cret-pass,second:other-pass"}
    with running_app("--model", str(trained_model), "--share", env=env, temp_dir=tmp_path) as (url, proc):
        for path, body in (("config", None), ("gradio_api/info", None),
                           ("gradio_api/call/predict", json.dumps({"data": [None, "tiny", 0.5, 1]}).encode())):
            request = urllib.request.Request(url + path, data=body, headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=10)
            assert info.value.code == 401, path
        with pytest.raises(Exception):
            new_client(url)  # the API is behind the login too
        with pytest.raises(Exception):
            new_client(url, auth=("reviewer", "wrong"))
        good = sorted((manifest_data / "benign" / "images").glob("*.png"))[0]
        label = _predict(new_client(url, auth=("reviewer", "s3cret-pass")), good, trained_model.name)[0]
        assert label["label"] in ("benign", "malignant")
        log = proc.log_path.read_text()
    # no network here: the share tunnel cannot open, and the app says so and keeps serving locally
    assert "share link could not be opened" in log and "still serving locally" in log


def test_app_downloads_pinned_revision_from_hub(trained_model, manifest_data, tmp_path):
    from hub_server import FakeHub, HubRepo
    from tumortrace.checkpoint import MODEL_FILES

    with FakeHub() as hub:
        hub.repos["lab/tiny"] = repo = HubRepo(trained_model, MODEL_FILES)
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf")}
        with running_app("--model", "lab/tiny", "--revision", repo.commit, env=env, temp_dir=tmp_path) as (url, _):
            good = sorted((manifest_data / "benign" / "images").glob("*.png"))[0]
            prov = _predict(new_client(url), good, "lab/tiny")[4]
    assert f"Hub `lab/tiny` @ `{repo.commit}`" in prov


def test_identical_concurrent_uploads_all_succeed(app, manifest_data):
    """Gradio stores identical uploads at one path; deleting it for one request must not break the other."""
    from concurrent.futures import ThreadPoolExecutor

    url, _, temp, name = app
    image = sorted((manifest_data / "malignant" / "images").glob("*.png"))[5]
    clients = [new_client(url) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: _predict(c, image, name)[0]["label"], clients * 2))
    assert len(results) == 8 and all(r in ("benign", "malignant") for r in results)


def test_torch_threads_share_the_cores_between_concurrent_predictions():
    import app
    assert app.threads_per_prediction(0, concurrency=2, cores=2) == 1
    assert app.threads_per_prediction(0, concurrency=2, cores=16) == 8
    assert app.threads_per_prediction(0, concurrency=4, cores=2) == 1  # never zero threads
    assert app.threads_per_prediction(3, concurrency=2, cores=2) == 3  # an explicit --threads wins


def test_no_classify_ahead_and_no_wide_alone_reach_the_running_app(trained_model, tmp_path):
    with running_app("--model", str(trained_model), "--no-classify-ahead", "--no-wide-alone",
                     temp_dir=tmp_path) as (url, proc):
        line = serving_line(proc.log_path)
    assert "; uploads decoded as they arrive;" in line, line  # decoded ahead still, not classified
    assert "; a prediction running alone on its share of the cores too;" in line, line
    assert "tumortrace.lone" not in proc.log_path.read_text()  # no second trunk built


def test_a_prediction_running_alone_uses_every_core_by_default(app):
    """tests/test_lone.py for the trunk, tests/test_gradio_uploads.py for a request."""
    url, proc, _, _ = app
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("on one core a prediction's share is every core already")
    line = serving_line(proc.log_path)
    assert f"; a prediction running alone on {cores} torch threads (a second trunk per model);" in line, line
    deadline = time.monotonic() + 60  # built in the background once the app is up
    while "a trunk for predictions running alone" not in proc.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    built = next(l for l in proc.log_path.read_text().splitlines() if "a trunk for predictions running alone" in l)
    assert f"{cores} torch threads" in built and re.search(r"\(features (identical|within \S+)\)$", built), built


def test_concurrency_and_threads_reach_the_running_app(trained_model, tmp_path):
    with running_app("--model", str(trained_model), "--concurrency", "3", "--threads", "2", "--no-decode-ahead",
                     temp_dir=tmp_path) as (url, proc):
        serving_line(proc.log_path)
        log = proc.log_path.read_text()
    assert "3 prediction(s) at once, 2 torch thread(s) each" in log, log[-2000:]
    if len(os.sched_getaffinity(0)) <= 2:  # a prediction's share is every core already
        assert "a prediction running alone on its share of the cores too" in log, log[-2000:]
    assert "uploads decoded when a prediction asks" in log, log[-2000:]  # --no-decode-ahead
    # requirements.txt installs both; Gradio leaves the choice to uvicorn's "auto"
    assert "uvloop event loop, httptools HTTP parser" in log, log[-2000:]
    assert "fewer thread hops: login check on the event loop, files read in 1 MiB chunks" in log, log[-2000:]
    assert "Gradio's configured folders resolved once for its path checks" in log, log[-2000:]  # tumortrace.gradio_paths
    from tumortrace import openmp  # the app inherits this process's environment
    given = [name for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY") if name in os.environ]
    assert (f"OpenMP spin as the environment sets it ({given[0]}=" if given
            else f"OpenMP idle threads spin {openmp.SPIN_COUNT} times before sleeping") in log, log[-2000:]
    import platform
    if platform.libc_ver()[0] == "glibc":  # tumortrace.malloc; tests/test_malloc.py for what each setting does
        assert "glibc malloc set for serving (arena_max, mmap_threshold, trim_threshold)" in log, log[-2000:]
    bad = run_cli("app.py", "--concurrency", "0")
    assert bad.returncode == 2 and "must be at least 1" in bad.stderr
    bad = run_cli("app.py", "--threads", "-1")
    assert bad.returncode == 2 and "must be 0 (automatic) or more" in bad.stderr


def test_the_slice_is_encoded_while_the_model_runs(trained_model, tmp_path, monkeypatch):
    """The slice's PNG does not wait for the prediction (it is encoded on the idle core while the model runs),
    nothing is on disk until the outputs are written, and the files hold the same bytes as each image encoded
    one after the other."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import app
    from tumortrace.cam import overlay
    from tumortrace.checkpoint import load
    from tumortrace.images import LoadedImage
    from tumortrace.inference import display_pixels

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    loaded = load(trained_model, for_inference=True)
    image = LoadedImage(np.random.default_rng(0).random((90, 120), dtype=np.float32))
    encoded, slice_encoded_during_model = threading.Event(), []
    real_model, real_png = app.predict_image, app.encode_png

    def encode_png(pixels):
        data = real_png(pixels)
        encoded.set()
        return data

    def model_that_waits_for_the_slice(*args):
        slice_encoded_during_model.append(encoded.wait(10))
        return real_model(*args)

    monkeypatch.setattr(app, "predict_image", model_that_waits_for_the_slice)
    monkeypatch.setattr(app, "encode_png", encode_png)
    with ThreadPoolExecutor(1) as encoder:
        rendered = app.render(loaded, image, "fast-cam", 0.45, encoder)
    assert slice_encoded_during_model == [True]
    assert not list(tmp_path.iterdir())  # rendered in memory only
    heat, shown = app.write_outputs(rendered)
    expected = display_pixels(image)
    assert np.array_equal(np.asarray(Image.open(shown)), expected)  # lossless, one channel
    assert Image.open(heat).format == "JPEG" and Image.open(heat).size == (120, 90)
    reference = overlay(expected, real_model(loaded, image, "fast-cam").cam, 0.45)
    assert heat == app.store_output(app.encode_jpeg(reference), "gradcam.jpg")  # content-addressed: the same bytes
    assert shown == app.store_output(real_png(expected), "image.png")
    direct = real_model(loaded, image, "fast-cam")
    assert (rendered.probabilities, rendered.decision, rendered.threshold) == (direct.probabilities, direct.decision,
                                                                                direct.threshold)


def test_moving_the_opacity_slider_redraws_the_overlay_of_the_answer_shown(trained_model, tmp_path, monkeypatch,
                                                                           caplog):
    """The page's own event (no API name), in the predictions' concurrency group: with an answer shown, the
    overlay a Classify at the new opacity gives (the same bytes, named alike), from the answer's map without
    running the model; with none shown, nothing; once the decoded upload is no longer held, the file is
    asked for again, as a Classify would."""
    import logging
    import shutil

    import gradio as gr

    import app
    from tumortrace import uploads
    from tumortrace.registry import build_registry

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = app.build_app(build_registry(str(trained_model), None), decode_ahead=False, wide_alone=False)
    fns = {f.name: f for f in demo.fns.values() if f.name}
    redraw, predict = fns["redraw_overlay"], fns["predict"]
    assert redraw.concurrency_id == predict.concurrency_id and redraw.api_visibility == "private"
    assert redraw.trigger_mode == "always_last"  # while dragging: one redraw at a time, and the last value's
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (60, 80), dtype=np.uint8)).save(tmp_path / "slice.png")
    name = trained_model.name

    def upload() -> dict:  # a fresh copy each time, where Gradio keeps uploads: a prediction deletes it
        folder = tmp_path / "gradio" / f"upload{len(list(tmp_path.glob('gradio/upload*')))}"
        folder.mkdir(parents=True)
        return {"path": shutil.copy(tmp_path / "slice.png", folder / "slice.png")}

    with caplog.at_level(logging.INFO, logger="tumortrace.app"):
        assert redraw.fn(upload(), name, 0.8, 1, None) == gr.skip()  # no answer shown
        assert redraw.fn(None, name, 0.8, 1, {"path": "gradcam.jpg"}) == gr.skip()  # no file
        assert "predict:" not in caplog.text and "redrawn" not in caplog.text
        shown_file = upload()
        shown = predict.fn(shown_file, name, 0.45, 1)
        assert not Path(shown_file["path"]).exists()
        redrawn = redraw.fn(shown_file, name, 0.8, 1, shown[1])
        assert caplog.text.count("predict:") == 1 and caplog.text.count("overlay redrawn at opacity 0.80") == 1
        with pytest.raises(gr.Error, match="must be a number from 0 to 1"):
            redraw.fn(shown_file, name, 1.5, 1, shown[1])
    assert redrawn == predict.fn(upload(), name, 0.8, 1)[1]  # content-addressed paths: the same bytes
    assert redrawn["path"] != shown[1]["path"] and redrawn["orig_name"] == shown[1]["orig_name"]
    later = time.monotonic() + 301  # past the 5 minutes a decoded upload (and its answer's map) is held
    monkeypatch.setattr(uploads.time, "monotonic", lambda: later)
    with pytest.raises(gr.Error, match="upload the file again"):
        redraw.fn(shown_file, name, 0.3, 1, shown[1])


@pytest.mark.parametrize("shape", [(37, 53), (64, 48, 3)])
def test_the_slice_png_is_lossless_gray_and_rgb(tmp_path, monkeypatch, shape):
    """The slice goes out as a PNG (tumortrace.png, fast) that is still bit-exact (Pillow reads it back; RGB order
    kept), with a smooth half where the filter matters and a noisy half where it does not."""
    import app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    ramp = np.linspace(0, 255, shape[1]).astype(np.uint8)
    pixels[: shape[0] // 2] = ramp[:, None] if len(shape) == 3 else ramp
    path = app.store_output(app.encode_png(pixels), "image.png")  # as the app writes the slice
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert np.array_equal(np.asarray(im), pixels)


def test_download_names_say_which_slice_frame_class_and_model():
    import app

    one = app.download_names(Path("/tmp/g/0123abcd/case 12 axial.png"), 1, 1, "resnet18_busi")
    assert one == ("case 12 axial_gradcam_malignant_resnet18_busi.jpg", "case 12 axial_as_seen.png")
    series = app.download_names(Path("/tmp/g/0123abcd/series.dcm"), 7, 40, "efficientnet_lite0_busi")
    assert series == ("series_frame7_gradcam_malignant_efficientnet_lite0_busi.jpg", "series_frame7_as_seen.png")


def test_calibration_table_of_the_evaluation_tab():
    import app

    # The hand-computed case of tests/test_metrics.py: five groups of two by P(malignant).
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.6, 0.4, 0.7, 0.55, 0.3, 0.2, 0.1, 0.05]
    rows = [{"label": "malignant" if t else "benign", "p_malignant": q} for t, q in zip(y, p)]
    text = app.calibration_markdown({"per_image": rows})
    assert "Brier score **0.150**" in text  # 0.1505, stored as 0.15049…
    assert "0.240 for giving every image the split's malignant fraction, 40%" in text
    assert "positive class **malignant**" in text and "not a calibrated risk" in text
    table = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert table[0] == "| 0.050–0.100 | 2 | 0.075 | 0/2 = 0.000 (0.000–0.658) |"
    assert table[-1].startswith("| 0.800–0.900 | 2 | 0.850 | 2/2 = 1.000 (0.342–1.000)")
    assert len(table) == 5
    assert "no calibration to show" in app.calibration_markdown({"per_image": []})
    assert "no calibration to show" in app.calibration_markdown(None)


@pytest.mark.parametrize("content, said", [
    ("{not json", "JSONDecodeError"),
    (json.dumps({"thresholds": {}}), "KeyError: 'default_0.5'"),
    (json.dumps({"per_image": [{"label": "normal", "p_malignant": 0.3}]}),
     "a test image's label is 'normal', not one of benign, malignant"),
    (json.dumps({"per_image": [{"label": "benign", "p_malignant": 1.5}]}),
     "a test image's p_malignant is 1.5, not a probability from 0 to 1"),
    (json.dumps({"per_image": [{"label": "benign", "p_malignant": "0.2"}]}), "p_malignant is '0.2'"),
])
def test_an_unreadable_evaluation_is_explained_in_its_place(tmp_path, caplog, content, said):
    """A model folder or Hub repo may carry an evaluation.json this version cannot read: each view of the Evaluation
    tab says so instead of failing the tab's whole update (the model still serves)."""
    from types import SimpleNamespace

    import app

    path = tmp_path / "evaluation.json"
    path.write_text(content)
    loaded = SimpleNamespace(file=lambda name: path if name == "evaluation.json" else None)
    views = app.evaluation_texts(loaded, (app.metrics_markdown,), (app.calibration_markdown,),
                                 (app.threshold_markdown, 0.5))
    assert len(views) == 3
    failed = [v for v in views if v.startswith("❌ **This model's `evaluation.json` cannot be shown here**")]
    assert failed and any(said in v for v in failed)
    assert "cannot be shown" in caplog.text
    good = tmp_path / "good.json"
    good.write_text((Path(__file__).resolve().parents[1] / "weights" / "efficientnet_lite0_busi" /
                     "evaluation.json").read_text())
    fine = SimpleNamespace(file=lambda name: good)
    metrics_text, threshold_text = app.evaluation_texts(fine, (app.metrics_markdown,), (app.threshold_markdown, 0.5))
    assert metrics_text.startswith("| metric (positive class: **malignant**)")
    assert threshold_text.startswith("At threshold **0.500**")


def _raw_upload(url: str, source: Path, name: str | None = None, mime: str = "image/png") -> str:
    """Upload ``source`` over Gradio's HTTP API (as ``name``); the path the server stored it at."""
    import httpx

    with httpx.Client(timeout=60) as http:
        response = http.post(url + "gradio_api/upload", files={"files": (name or source.name, source.read_bytes(), mime)})
    response.raise_for_status()
    return response.json()[0]


def _raw_predict(url: str, upload_path: str | None, model_name, frame, opacity=0.45,
                 file=None) -> tuple[list | None, str | None]:
    """One /predict call over Gradio's HTTP API for an upload already on the server: (outputs, error)."""
    import httpx

    file = file if upload_path is None else {"path": upload_path, "meta": {"_type": "gradio.FileData"}}
    payload = {"data": [file, model_name, opacity, frame]}
    with httpx.Client(timeout=60) as http:
        event = http.post(url + "gradio_api/call/predict", content=json.dumps(payload),  # NaN as Python writes it
                          headers={"Content-Type": "application/json"}).json()["event_id"]
        lines = http.get(url + f"gradio_api/call/predict/{event}").text.strip().splitlines()
    kind, data = lines[-2].removeprefix("event: "), lines[-1].removeprefix("data: ")
    return (json.loads(data), None) if kind == "complete" else (None, data)


def test_frames_of_one_upload_are_chosen_without_uploading_it_again(app, tmp_path):
    import httpx

    from tumortrace.images import load_image
    from tumortrace.inference import display_pixels

    url, _, temp, name = app
    source = write_case(tmp_path, "multiframe.dcm")
    upload = _raw_upload(url, source, "series.dcm", "application/dicom")
    for frame in (2, 3):
        outputs, error = _raw_predict(url, upload, name, frame)
        assert error is None, error
        assert f"frame: frame {frame} of 3 used" in outputs[3]
        # what the page's download buttons call them: the upload, its frame, and for the overlay class and model
        assert outputs[1]["orig_name"] == f"series_frame{frame}_gradcam_malignant_{name}.jpg"
        assert outputs[2]["orig_name"] == f"series_frame{frame}_as_seen.png"
        with httpx.Client(timeout=60) as http:
            shown = np.asarray(Image.open(io.BytesIO(http.get(outputs[2]["url"]).content)))
        assert np.array_equal(shown, display_pixels(load_image(source, frame=frame)))
    assert not any(p.read_bytes() == source.read_bytes() for p in temp.rglob("*") if p.is_file())  # not on disk
    _, error = _raw_predict(url, upload, name, 7)
    assert "frame 7 was asked for, but the file has 3 frames" in error
    _, error = _raw_predict(url, upload, name, 0)
    assert "The frame must be a whole number from 1 (1 = the first frame); got '0'." in error


@pytest.mark.parametrize("position, value, message", [
    ("model", None, "The model must be one of: "),
    ("model", ["x"], "The model must be one of: "),
    ("model", "nonexistent", "The model must be one of: tiny; got 'nonexistent'."),
    ("opacity", "abc", "The Grad-CAM opacity must be a number from 0 to 1; got 'abc'."),
    ("opacity", 2, "The Grad-CAM opacity must be a number from 0 to 1; got '2'."),
    ("opacity", float("nan"), "The Grad-CAM opacity must be a number from 0 to 1; got 'nan'."),
    ("frame", "abc", "The frame must be a whole number from 1 (1 = the first frame); got 'abc'."),
    ("frame", None, "The frame must be a whole number from 1"),
    ("frame", 1e300, "but the file has 1 frame"),
    ("file", "slice.png", "validation error for FileData"),  # Gradio's own check
])
def test_bad_api_inputs_get_a_specific_error(app, tmp_path, position, value, message):
    """The page sends only valid values; an API client can send anything, and is told what was wrong."""
    url, _, _, name = app
    upload = _raw_upload(url, write_case(tmp_path, "large_legal.png"), "s.png")
    inputs = {"model": name, "opacity": 0.45, "frame": 1, "file": None} | {position: value}
    outputs, error = _raw_predict(url, None if position == "file" else upload, inputs["model"], inputs["frame"],
                                  inputs["opacity"], file=inputs["file"])
    assert outputs is None and message in error, error
