"""The image loader against the hostile corpus (tests/hostile.py), plus a bounded fuzz run."""
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from hypothesis import HealthCheck, given, settings, strategies as st

from hostile import CASES, deflated_series, rle_series, write_case
from tumortrace.images import MAX_FILE_BYTES, ImageLoadError, LoadedImage, load_image


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(tmp_path, name):
    path = write_case(tmp_path, name)
    kind, expect = CASES[name][1]
    if kind == "error":
        with pytest.raises(ImageLoadError) as info:
            load_image(path)
        assert expect in str(info.value), str(info.value)
        assert path.name in str(info.value)  # the message names the file
    else:
        loaded = load_image(path)
        assert isinstance(loaded, LoadedImage)
        assert loaded.pixels.dtype == np.float32
        assert np.isfinite(loaded.pixels).all() and 0 <= loaded.pixels.min() and loaded.pixels.max() <= 1
        expect(loaded)


def test_corpus_has_at_least_25_kinds():
    assert len(CASES) >= 25


def test_dicom_identifying_values_never_reach_info(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "PID-93847", "19700101"
    ds.InstitutionName, ds.AccessionNumber = "St Example Hospital", "ACC-5521"
    path = tmp_path / "identified.dcm"
    ds.save_as(path, enforce_file_format=True)
    text = repr(load_image(path).info)
    for value in ("DOE", "JANE", "PID-93847", "19700101", "Example", "ACC-5521"):
        assert value not in text


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot be opened"):
        load_image(tmp_path / "nope.png")


def test_file_removed_after_its_size_was_read(tmp_path, monkeypatch):
    """A concurrent identical upload's request deletes the shared file between load_image's stat and open:
    that must be an ImageLoadError (the app then serves the decoded copy), not a FileNotFoundError."""
    path = tmp_path / "slice.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path, format="PNG")
    real_stat = Path.stat

    def stat_then_vanish(self, *args, **kwargs):
        result = real_stat(self, *args, **kwargs)
        if self == path:
            os.unlink(self)
        return result

    monkeypatch.setattr(Path, "stat", stat_then_vanish)
    with pytest.raises(ImageLoadError, match="cannot be opened"):
        load_image(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=3000), suffix=st.sampled_from([".png", ".jpg", ".tif", ".dcm", ".bmp", ""]))
def test_fuzz_loader_never_raises_anything_but_image_load_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        load_image(path)
    except ImageLoadError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=1, max_value=2000), flip=st.integers(min_value=0, max_value=2000))
def test_fuzz_mutated_png(tmp_path, cut, flip):
    from hostile import _gray, _png_bytes
    data = bytearray(_png_bytes(_gray(40, 40)))
    data[flip % len(data)] ^= 0xFF
    path = tmp_path / "m.png"
    path.write_bytes(bytes(data[: max(cut, 1)]))
    try:
        load_image(path)
    except ImageLoadError:
        pass


def _float_the_slow_way(im: Image.Image) -> np.ndarray:
    """What the loader computed before it converted 8-bit pixels itself: PIL's own float conversion."""
    if im.mode in {"RGBA", "LA", "PA"}:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        pixels = rgba[..., :3] * rgba[..., 3:4]
    else:
        pixels = (np.asarray(im, dtype=np.float32) / 255.0)
        pixels = pixels[..., :3] if pixels.ndim == 3 else pixels
    if pixels.ndim == 3 and np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1],
                                                                                               pixels[..., 2]):
        return pixels[..., 0]
    return pixels


@pytest.mark.parametrize("mode", ["L", "RGB", "gray RGB", "RGBA", "gray RGBA", "LA", "P", "1", "CMYK"])
def test_8bit_pixels_are_exactly_pils_float_values(tmp_path, mode):
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    if mode.startswith("gray"):
        noise[..., 1] = noise[..., 2] = noise[..., 0]  # equal channels: must come back as one
    im = {"L": lambda: Image.fromarray(noise[..., 0]),
          "RGB": lambda: Image.fromarray(noise[..., :3]),
          "gray RGB": lambda: Image.fromarray(noise[..., :3]),
          "RGBA": lambda: Image.fromarray(noise),
          "gray RGBA": lambda: Image.fromarray(noise),
          "LA": lambda: Image.fromarray(noise[..., [0, 3]], "LA"),
          "P": lambda: Image.fromarray(noise[..., :3]).convert("P"),
          "1": lambda: Image.fromarray(noise[..., 0]).convert("1"),
          "CMYK": lambda: Image.fromarray(noise).convert("CMYK")}[mode]()
    path = tmp_path / ("slice.tiff" if mode == "CMYK" else "slice.png")
    im.save(path)
    with Image.open(path) as reread:
        reread.load()
        expected = _float_the_slow_way(reread.convert("RGB") if reread.mode in {"P", "CMYK"}
                                       else reread.convert("L") if reread.mode == "1" else reread)
    pixels = load_image(path).pixels
    assert pixels.dtype == np.float32 and pixels.flags.c_contiguous
    assert pixels.shape == expected.shape
    np.testing.assert_array_equal(pixels, expected)
    assert pixels.ndim == (2 if mode in {"L", "gray RGB", "gray RGBA", "LA", "1"} else 3)


def _peak_traced_bytes(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_compressed_series_decodes_only_the_slice_it_shows(tmp_path):
    """256 RLE frames of 512×512 (4 MB on disk) are 128 MiB decoded; one slice is 0.5 MiB."""
    path = tmp_path / "series.dcm"
    path.write_bytes(rle_series(512, 256))
    loaded, peak = _peak_traced_bytes(lambda: load_image(path))
    assert loaded.info["frame"] == "frame 1 of 256 used"
    assert peak < 40 * 2**20, f"{peak / 2**20:.0f} MiB at peak"


def test_a_deflate_bomb_is_refused_without_inflating_it(tmp_path):
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflated_series(4096, 8))  # 256 MiB inflated, 0.25 MB on disk

    def refused():
        with pytest.raises(ImageLoadError, match=f"inflates to more than {MAX_FILE_BYTES // 2**20} MiB"):
            load_image(path)

    _, peak = _peak_traced_bytes(refused)
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB at peak"
