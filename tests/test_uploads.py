"""tumortrace.uploads: uploads decoded once, held in memory only, deleted from disk once decoded, and
decoded ahead as they arrive."""
import threading
import time

import numpy as np
import pytest
from PIL import Image

from hostile import write_case
from tumortrace import uploads
from tumortrace.images import ImageLoadError, LoadedImage, load_image


def test_recent_uploads_are_bounded_in_bytes_and_age(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent = uploads.RecentUploads(ttl_s=30, max_bytes=10_000)
    image = lambda: LoadedImage(np.zeros((40, 25), np.float32))  # 4,000 bytes
    for key in "abc":
        recent.put(key, image())
    assert recent.get("a") is None and recent.get("b") is not None and recent.get("c") is not None
    big = LoadedImage(np.zeros((100, 100), np.float32))  # 40,000 bytes: above the cap alone
    recent.put("big", big)
    assert recent.get("big") is big and recent.get("c") is None  # the newest stays, the rest make room
    now[0] += 31
    assert recent.get("big") is None  # and nothing outlives the age limit


def test_an_identical_upload_read_while_the_first_is_decoding_gets_the_image(tmp_path, monkeypatch):
    """Two requests share one upload file: the second reads it while the first is still decoding. The file
    must still be there (or the first's outcome already recorded), not gone with nothing recorded."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    recent = uploads.RecentUploads()
    upload = tmp_path / "0123abcd" / "slice.png"
    upload.parent.mkdir()
    Image.fromarray(np.full((32, 32), 77, np.uint8)).save(upload)
    real_load, decoding, finish = uploads.load_image, threading.Event(), threading.Event()

    def first_decode_waits(path, *args, **kwargs):
        if not decoding.is_set():
            decoding.set()
            assert finish.wait(30)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(uploads, "load_image", first_decode_waits)
    first = {}
    thread = threading.Thread(target=lambda: first.update(image=uploads.read_upload(upload, recent)))
    thread.start()
    try:
        assert decoding.wait(30)  # the first request has read the file and is decoding it
        second = uploads.read_upload(upload, recent)
    finally:
        finish.set()
        thread.join(30)
    assert second.pixels.shape == first["image"].pixels.shape == (32, 32)
    assert np.array_equal(second.pixels, first["image"].pixels)
    assert not upload.exists()


def test_read_upload_answers_identical_uploads_alike_whenever_loading_fails(tmp_path, monkeypatch):
    """A concurrent identical request can delete the shared upload mid-read and a third can re-create it,
    so the file existing again must not stop the fallback; a file that cannot be used gets its own error."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    recent = uploads.RecentUploads()
    upload = tmp_path / "0123abcd" / "slice.png"
    upload.parent.mkdir()
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(upload)
    first = uploads.read_upload(upload, recent)
    assert not upload.exists()  # deleted at once
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(upload)  # re-created by a third identical upload

    def vanished_mid_read(path, *args, **kwargs):
        raise ImageLoadError(path, "cannot be opened (No such file or directory)")

    monkeypatch.setattr(uploads, "load_image", vanished_mid_read)
    assert uploads.read_upload(upload, recent) is first
    corrupt = tmp_path / "ffff0000" / "other.png"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not an image")
    monkeypatch.undo()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        uploads.read_upload(corrupt, recent)
    assert not corrupt.exists()
    # An identical upload whose shared file the first request deleted gets the same specific error,
    # not "cannot be opened" (seen under load: two clients sending one corrupt file at once).
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        uploads.read_upload(corrupt, recent)
    with pytest.raises(ImageLoadError, match="cannot be opened"):  # a missing file nobody decoded says so
        uploads.read_upload(tmp_path / "eeee1111" / "never.png", recent)


def test_read_upload_keeps_a_multi_frame_upload_for_its_other_frames(tmp_path, monkeypatch):
    """The browser sends the same upload's path for another frame; the file was deleted at the first."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    series, single = tmp_path / "0123abcd" / "series", tmp_path / "4567cdef" / "slice.png"
    series.parent.mkdir(), single.parent.mkdir()
    series.write_bytes(write_case(tmp_path, "multiframe.dcm").read_bytes())  # 3 frames, no .dcm suffix
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(single)
    expected = [load_image(tmp_path / "multiframe.dcm", frame=k).pixels for k in (1, 2, 3)]
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent = uploads.RecentUploads()  # 5 minutes since last use
    for frame in (2, 1, 3):
        got = uploads.read_upload(series, recent, frame)
        assert not series.exists()  # deleted at the first read
        assert got.info["frame"] == f"frame {frame} of 3 used" and np.array_equal(got.pixels, expected[frame - 1])
        now[0] += 200  # each use starts the age again
    with pytest.raises(ImageLoadError, match="frame 4 was asked for, but the file has 3 frames"):
        uploads.read_upload(series, recent, 4)
    uploads.read_upload(single, recent)
    with pytest.raises(ImageLoadError, match="frame 2 was asked for, but the file has 1 frame"):
        uploads.read_upload(single, recent, 2)  # a one-frame file's bytes are not kept, and need not be
    now[0] += 301
    with pytest.raises(ImageLoadError, match="cannot be opened .*upload the file again"):
        uploads.read_upload(series, recent, 2)  # nothing outlives the age limit
    recent.put("0123abcd/series frame 1", LoadedImage(np.zeros((32, 32), np.float32), frames=3))
    with pytest.raises(ImageLoadError, match="frame 5 was asked for, but the file has 3 frames"):
        uploads.read_upload(series, recent, 5)  # its bytes made room for newer uploads; its frame count is known





def _upload(tmp_path, name: str = "slice.png", value: int = 77, folder: str = "0123abcd"):
    path = tmp_path / folder / name
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(np.full((32, 48), value, np.uint8)).save(path)
    return path


class CountingLoad:
    """uploads.load_image that records which thread decoded which file; with ``hold``, its first decode waits
    until ``release`` is set."""

    def __init__(self, hold: bool = False):
        self.calls, self.started, self.release = [], threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, path, *args, **kwargs):
        self.calls.append((threading.current_thread().name.startswith("tumortrace-decode"), path.parent.name))
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(30)
        return load_image(path, *args, **kwargs)


def _wait_decoded(ahead: uploads.DecodeAhead) -> None:
    """Until the decodes handed to the decode thread are done, and no longer held (one thread: a task
    submitted now runs after them, and a decode's done-callback runs before the thread takes the next)."""
    ahead._pool.submit(lambda: None).result(30)


def test_an_upload_decoded_as_it_arrived_is_deleted_and_its_outcome_kept_for_its_request(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    upload = _upload(tmp_path)
    expected = load_image(upload).pixels
    counting = CountingLoad()
    monkeypatch.setattr(uploads, "load_image", counting)
    recent = uploads.RecentUploads()
    ahead = uploads.DecodeAhead(recent)
    ahead.start([str(upload)])
    _wait_decoded(ahead)
    assert not upload.exists()  # deleted once decoded, before anybody asked for its prediction
    assert ahead.pending() == 0  # and nothing held by the decode ahead: the outcome is in recent uploads
    decoded = recent.get("0123abcd/slice.png frame 1")
    assert np.array_equal(decoded.pixels, expected)
    image = uploads.read_upload(upload, recent, 1, ahead)
    assert image is decoded
    assert counting.calls == [(True, "0123abcd")]  # decoded once, on the decode thread
    with monkeypatch.context() as m:  # a prediction is running: the same bytes uploaded again wait for their request
        m.setattr(ahead, "idle", lambda: False)
        again = _upload(tmp_path)
        ahead.start([str(again)])
        assert again.exists() and ahead.pending() == 0
    assert np.array_equal(uploads.read_upload(again, recent, 1, ahead).pixels, expected)
    assert counting.calls == [(True, "0123abcd"), (False, "0123abcd")] and not again.exists()


def test_a_request_waits_for_its_decode_under_way_and_decodes_itself_one_not_started(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    first, second = _upload(tmp_path, value=10, folder="aaaa"), _upload(tmp_path, value=20, folder="bbbb")
    counting = CountingLoad(hold=True)
    monkeypatch.setattr(uploads, "load_image", counting)
    recent = uploads.RecentUploads()
    ahead = uploads.DecodeAhead(recent)
    ahead.start([str(first)])
    assert counting.started.wait(30)  # first is being decoded ahead, and held there
    ahead.start([str(second)])  # waits behind it: one decode thread
    assert ahead.pending() == 2
    second_image = uploads.read_upload(second, recent, 1, ahead)  # its decode ahead had not started: cancelled
    assert second_image.pixels[0, 0] == np.float32(20 / 255)
    got = {}
    request = threading.Thread(target=lambda: got.update(first=uploads.read_upload(first, recent, 1, ahead)))
    request.start()
    request.join(0.3)
    assert request.is_alive() and not got  # waiting for the decode under way, not decoding it again
    counting.release.set()
    request.join(30)
    assert got["first"].pixels[0, 0] == np.float32(10 / 255)
    ahead._pool.shutdown(wait=True)
    assert counting.calls == [(True, "aaaa"), (False, "bbbb")]  # each decoded once; the cancelled one never ran
    assert ahead.pending() == 0 and not first.exists() and not second.exists()


def test_nothing_is_decoded_ahead_while_a_prediction_runs_or_beyond_the_decodes_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    files = [_upload(tmp_path, value=v, folder=f"{v:04x}") for v in (1, 2, 3)]
    counting = CountingLoad(hold=True)
    monkeypatch.setattr(uploads, "load_image", counting)
    busy, recent = [True], uploads.RecentUploads()
    ahead = uploads.DecodeAhead(recent, idle=lambda: not busy[0], keep=2)
    ahead.start([str(f) for f in files])
    assert ahead.pending() == 0  # a prediction runs: no idle core to decode on
    busy[0] = False
    ahead.start([str(f) for f in files] + [str(files[0])])  # the third is beyond keep; the first is already under way
    assert counting.started.wait(30)
    assert ahead.pending() == 2 and sorted(ahead._futures) == ["0001/slice.png", "0002/slice.png"]
    counting.release.set()
    _wait_decoded(ahead)
    assert ahead.pending() == 0 and [f.exists() for f in files] == [False, False, True]
    for f in files:  # each request gets its own image, decoded ahead or not
        assert uploads.read_upload(f, recent, 1, ahead).pixels[0, 0] == np.float32(int(f.parent.name, 16) / 255)
    assert counting.calls == [(True, "0001"), (True, "0002"), (False, "0003")]


def test_decodes_done_hold_no_place_and_their_outcomes_last_as_recent_uploads_do(tmp_path, monkeypatch):
    """Uploads chosen one after another and never classified (a reviewer changing their mind) are each
    decoded ahead and deleted; a click minutes later still finds the image, until recent uploads let it go."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent = uploads.RecentUploads(ttl_s=300)
    ahead = uploads.DecodeAhead(recent, keep=1)
    chosen = [_upload(tmp_path, value=v, folder=f"{v:04x}") for v in (1, 2, 3)]
    for f in chosen:
        ahead.start([str(f)])
        _wait_decoded(ahead)
        assert not f.exists()
    assert ahead.pending() == 0
    now[0] += 200
    assert uploads.read_upload(chosen[0], recent, 1, ahead).pixels[0, 0] == np.float32(1 / 255)
    now[0] += 301
    with pytest.raises(ImageLoadError, match="cannot be opened .*upload the file again"):
        uploads.read_upload(chosen[1], recent, 1, ahead)  # 8 minutes after its upload


def test_a_file_that_cannot_be_used_gets_its_own_error_when_decoded_ahead(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    corrupt = tmp_path / "ffff0000" / "other.png"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not an image")
    recent = uploads.RecentUploads()
    ahead = uploads.DecodeAhead(recent)
    ahead.start([str(corrupt)])
    _wait_decoded(ahead)
    assert not corrupt.exists()  # a file that cannot be used goes too
    with pytest.raises(ImageLoadError, match="not a recognised image") as ahead_error:
        uploads.read_upload(corrupt, recent, 1, ahead)
    assert not corrupt.exists()
    twin = tmp_path / "ffff1111" / "other.png"  # the same file, decoded by its request
    twin.parent.mkdir()
    twin.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError) as request_error:
        uploads.read_upload(twin, uploads.RecentUploads())
    assert str(ahead_error.value) == str(request_error.value)
    with pytest.raises(ImageLoadError, match="not a recognised image"):  # recorded for an identical upload
        uploads.read_upload(corrupt, recent, 1, ahead)


def test_a_decode_ahead_that_fails_unexpectedly_leaves_the_decode_to_its_request(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    upload = _upload(tmp_path)
    real = uploads.load_image

    def fails_on_the_decode_thread(path, *args, **kwargs):
        if threading.current_thread().name.startswith("tumortrace-decode"):
            raise MemoryError("no room")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(uploads, "load_image", fails_on_the_decode_thread)
    ahead = uploads.DecodeAhead(uploads.RecentUploads())
    ahead.start([str(upload)])
    _wait_decoded(ahead)
    assert upload.exists()  # left for its request to decode
    assert uploads.read_upload(upload, uploads.RecentUploads(), 1, ahead).pixels.shape == (32, 48)
    assert "decoding an upload as it arrived failed" in caplog.text and "MemoryError: no room" in caplog.text


def test_other_frames_of_an_upload_decoded_ahead(tmp_path, monkeypatch):
    """Frame 1 is decoded ahead, and the file deleted; the other frames are decoded from the bytes that
    decode put in the recent uploads."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    series = tmp_path / "0123abcd" / "series"
    series.parent.mkdir()
    series.write_bytes(write_case(tmp_path, "multiframe.dcm").read_bytes())  # 3 frames
    expected = [load_image(tmp_path / "multiframe.dcm", frame=k).pixels for k in (1, 2, 3)]
    recent = uploads.RecentUploads()
    ahead = uploads.DecodeAhead(recent)
    ahead.start([str(series)])
    _wait_decoded(ahead)
    assert not series.exists()
    for frame in (2, 3, 1):
        got = uploads.read_upload(series, recent, frame, ahead)
        assert np.array_equal(got.pixels, expected[frame - 1]) and not series.exists()


def test_identical_uploads_one_after_the_other_are_each_decoded_ahead_and_both_get_the_image(tmp_path, monkeypatch):
    """Gradio stores identical bytes at one path: a second upload puts the file back after the first's decode
    ahead deleted it, and is decoded ahead and deleted in its turn. Both requests (the same path: which is
    whose cannot matter) get the image, and no file stays."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    expected = load_image(_upload(tmp_path, folder="reference")).pixels
    counting = CountingLoad()
    monkeypatch.setattr(uploads, "load_image", counting)
    recent = uploads.RecentUploads()
    ahead = uploads.DecodeAhead(recent)
    upload = _upload(tmp_path)
    for _upload_number in range(2):
        ahead.start([str(upload)])
        _wait_decoded(ahead)
        assert not upload.exists()
        assert _upload(tmp_path) == upload  # the identical second upload (and a third, unused, at the end)
    ahead.start([str(upload)])  # the third is never classified: gone too
    _wait_decoded(ahead)
    for _request in range(2):
        assert np.array_equal(uploads.read_upload(upload, recent, 1, ahead).pixels, expected)
    assert not upload.exists() and ahead.pending() == 0
    assert counting.calls == [(True, "0123abcd")] * 3
