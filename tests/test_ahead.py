"""tumortrace.ahead: an upload classified as it arrives is used only by a request for exactly that image,
model and opacity, only while the app is idle, one at a time, and is not held for long."""
import logging
import threading

import numpy as np
import pytest

from tumortrace import ahead as ahead_module
from tumortrace import uploads
from tumortrace.ahead import ClassifyAhead
from tumortrace.images import LoadedImage


class Render:
    """A render that records its calls and can be held until released."""

    def __init__(self, hold: bool = False, fail: bool = False):
        self.calls, self.fail = [], fail
        self.started, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, model, opacity, image):
        self.calls.append((model, opacity, threading.current_thread().name))
        self.started.set()
        assert self.release.wait(30)
        if self.fail:
            raise RuntimeError("model failed")
        return ("rendered", model, opacity, id(image))


def _image(seed: int = 0) -> LoadedImage:
    return LoadedImage(np.random.default_rng(seed).random((8, 9), dtype=np.float32))


def _wait_rendered(classified: ClassifyAhead) -> None:
    classified._pool.submit(lambda: None).result(30)  # one thread: this runs after the renders handed to it


def test_a_request_for_the_same_image_model_and_opacity_takes_what_was_rendered_once():
    render = Render()
    classified = ClassifyAhead(render, "lite0", 0.45)
    image = _image()
    classified.start("abc/slice.png", image)
    _wait_rendered(classified)
    assert render.calls == [("lite0", 0.45, render.calls[0][2])]
    assert render.calls[0][2].startswith("tumortrace-ahead")  # on its own thread, not the caller's
    assert classified.take("abc/slice.png", image, "lite0", 0.45) == ("rendered", "lite0", 0.45, id(image))
    assert classified.taken == 1 and classified.held() == 0
    assert classified.take("abc/slice.png", image, "lite0", 0.45) is None  # taken once, then gone


@pytest.mark.parametrize("asked", ["other model", "other opacity", "other image", "other upload"])
def test_any_other_request_gets_nothing_and_the_result_is_dropped(asked):
    classified = ClassifyAhead(Render(), "lite0", 0.45)
    image = _image()
    classified.start("abc/slice.png", image)
    _wait_rendered(classified)
    key, img, model, opacity = "abc/slice.png", image, "lite0", 0.45
    if asked == "other model":
        model = "resnet18"
    elif asked == "other opacity":
        opacity = 0.5
    elif asked == "other image":
        img = _image()  # equal pixels, not the image decoded ahead (another frame, or decoded again)
        img.pixels[...] = image.pixels
    else:
        key = "def/slice.png"
    assert classified.take(key, img, model, opacity) is None
    assert classified.taken == 0
    assert classified.held() == (1 if asked == "other upload" else 0)


def test_the_page_or_the_last_request_says_which_model_and_opacity_come_next():
    render = Render()
    classified = ClassifyAhead(render, "lite0", 0.45)
    classified.expect(model="resnet18")
    assert classified.expected == ("resnet18", 0.45)
    classified.expect(opacity=0.7)
    assert classified.expected == ("resnet18", 0.7)
    image = _image()
    classified.start("abc/slice.png", image)
    _wait_rendered(classified)
    assert render.calls[0][:2] == ("resnet18", 0.7)
    assert classified.take("abc/slice.png", image, "resnet18", 0.7) is not None


def test_nothing_is_rendered_while_a_prediction_runs_without_a_model_or_while_one_is_under_way():
    busy = [True]
    render = Render(hold=True)
    classified = ClassifyAhead(render, "lite0", 0.45, idle=lambda: not busy[0])
    classified.start("a/x.png", _image())
    assert classified.held() == 0 and render.calls == []
    assert ClassifyAhead(render, None, 0.45).start("a/x.png", _image()) is None and render.calls == []  # no model
    busy[0] = False
    classified.start("a/x.png", _image(1))
    assert render.started.wait(30)
    assert classified.busy()  # the app then runs a request's prediction on its own share of the cores
    classified.start("b/y.png", _image(2))  # the first is still under way
    render.release.set()
    _wait_rendered(classified)
    assert len(render.calls) == 1 and classified.held() == 1
    assert not classified.busy()  # held, done


def test_a_request_waits_for_its_render_under_way():
    render = Render(hold=True)
    classified = ClassifyAhead(render, "lite0", 0.45)
    image = _image()
    classified.start("abc/slice.png", image)
    assert render.started.wait(30)
    got = []
    taker = threading.Thread(target=lambda: got.append(classified.take("abc/slice.png", image, "lite0", 0.45)))
    taker.start()
    taker.join(0.2)
    assert taker.is_alive() and got == []  # waiting
    render.release.set()
    taker.join(30)
    assert got == [("rendered", "lite0", 0.45, id(image))]


def test_a_render_that_fails_leaves_the_request_to_render_its_own():
    classified = ClassifyAhead(Render(fail=True), "lite0", 0.45)
    image = _image()
    classified.start("abc/slice.png", image)
    _wait_rendered(classified)
    assert classified.take("abc/slice.png", image, "lite0", 0.45) is None
    assert classified.taken == 0


def test_results_are_dropped_beyond_keep_and_after_their_time(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ahead_module.time, "monotonic", lambda: now[0])
    classified = ClassifyAhead(Render(), "lite0", 0.45, keep=2, ttl_s=60)
    images = [_image(i) for i in range(3)]
    for i, image in enumerate(images):
        classified.start(f"k{i}/x.png", image)
        _wait_rendered(classified)
    assert classified.held() == 2
    assert classified.take("k0/x.png", images[0], "lite0", 0.45) is None  # the oldest went
    now[0] += 61
    assert classified.take("k2/x.png", images[2], "lite0", 0.45) is None  # too old
    assert classified.held() == 0


def _png_upload(tmp_path, name="0123abcd/slice.png"):
    from PIL import Image

    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 30), dtype=np.uint8)).save(path)
    return path


def test_decode_ahead_hands_each_decoded_image_on_and_nothing_for_a_file_it_cannot_use(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    recent, handed = uploads.RecentUploads(), []
    decode = uploads.DecodeAhead(recent, then=lambda key, image: handed.append((key, image)))
    good = _png_upload(tmp_path)
    bad = tmp_path / "4567cdef" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    decode.start([str(good), str(bad)])
    decode._pool.submit(lambda: None).result(30)
    assert [key for key, _ in handed] == ["0123abcd/slice.png"]
    assert handed[0][1] is recent.get("0123abcd/slice.png frame 1")  # the very image its request will get


def test_a_failing_hook_after_the_decode_is_logged_and_the_decode_kept(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    recent = uploads.RecentUploads()

    def broken(key, image):
        raise RuntimeError("hook failed")

    decode = uploads.DecodeAhead(recent, then=broken)
    upload = _png_upload(tmp_path)
    with caplog.at_level(logging.ERROR, logger="tumortrace.uploads"):
        decode.start([str(upload)])
        decode._pool.submit(lambda: None).result(30)
    assert "the hook after decoding an upload ahead failed" in caplog.text
    assert isinstance(recent.get("0123abcd/slice.png frame 1"), LoadedImage) and not upload.exists()


def test_a_held_result_does_not_keep_its_image_alive():
    """Only a weak reference: what decoded uploads take in memory stays bounded by RecentUploads, which may let
    a large one go while its result is still held here."""
    import gc
    import weakref

    classified = ClassifyAhead(Render(), "lite0", 0.45)
    image = _image()
    gone = weakref.ref(image)
    classified.start("abc/slice.png", image)
    _wait_rendered(classified)
    assert classified.held() == 1
    del image
    gc.collect()
    assert gone() is None
