"""The image loader against the hostile corpus (tests/hostile.py), plus a bounded fuzz run."""
import io
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from hypothesis import HealthCheck, given, settings, strategies as st

from hostile import (CASES, _bomb_png, _png_bytes, compressed_dicom, deflated_series, dicom_bytes, mr_8bit, mr_series,
                     mr_small, ramp_codestream, rle_series, write_case)
from tumortrace.images import (MAX_FILE_BYTES, ImageLoadError, LoadedImage, codestream_size, load_frames,
                               load_image)


@pytest.mark.filterwarnings("ignore:Expected explicit VR")  # pydicom, on a file meta written in implicit VR
@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # pydicom, on a NumberOfFrames "abc"
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(tmp_path, name, warning_filters_left_alone):
    path = write_case(tmp_path, name)
    kind, expect = CASES[name][1]
    if kind == "error":
        with pytest.raises(ImageLoadError) as info, warning_filters_left_alone():
            load_image(path)
        assert expect in str(info.value), str(info.value)
        assert path.name in str(info.value)  # the message names the file
    else:
        with warning_filters_left_alone():
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


def test_an_image_between_pillows_warning_and_its_error_is_refused_by_the_loaders_limit(tmp_path,
                                                                                       warning_filters_left_alone):
    """Pillow warns above its limit (~89 MP) and refuses above twice that; the loader's own limit is lower and
    refuses the image right after Pillow's warning, which is no longer made an error through
    warnings.catch_warnings (uploads are decoded on several threads at once)."""
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)
    path = tmp_path / "big.png"
    path.write_bytes(_bomb_png(side, side))
    with pytest.raises(ImageLoadError, match=r"the limit is 50 MP \(possible decompression bomb\)"), \
            pytest.warns(Image.DecompressionBombWarning), warning_filters_left_alone():
        load_image(path)


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
    from hostile import _gray
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


def test_a_jpeg_frame_larger_than_its_header_is_refused_before_decoding(tmp_path):
    """8192² pixels in a 1.3 MB file whose header says 512×512: 64 MiB decoded, refused at a few."""
    path = tmp_path / "bomb.dcm"
    path.write_bytes(compressed_dicom("JPEG", 8192))

    def refused():
        with pytest.raises(ImageLoadError, match="8192×8192 pixels but the DICOM header says 512×512"):
            load_image(path)

    _, peak = _peak_traced_bytes(refused)
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB at peak"


@pytest.mark.parametrize("data, size", [
    (b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x0b\x08\x01\x02\x03\x04\x01", (0x0304, 0x0102)),  # APP0, then SOF0
    (b"\xff\xd8\xff\xf7\x00\x0b\x08\x00\x40\x00\x50\x01", (0x50, 0x40)),  # JPEG-LS SOF55
    (b"\xff\xd8\xff\xff\xff\xc0\x00\x0b\x08\x00\x10\x00\x20\x01", (0x20, 0x10)),  # fill bytes before SOF0
    (b"\xff\xd8\xff\xc4\x00\x02", (0, 0)),  # cut short before any SOF
    (b"\xff\x4f\xff\x51\x00\x29\x00\x00" + struct.pack(">IIII", 300, 200, 100, 50), (200, 150)),  # SIZ minus offsets
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x08junk" + b"\x00\x00\x00\x20jp2c"
     + b"\xff\x4f\xff\x51\x00\x29\x00\x00" + struct.pack(">IIII", 64, 32, 0, 0), (64, 32)),  # JP2 boxes
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x01junk" + struct.pack(">Q", 20) + b"...."
     + b"\x00\x00\x00\x01jp2c" + struct.pack(">Q", 40)
     + b"\xff\x4f\xff\x51\x00\x29\x00\x00" + struct.pack(">IIII", 64, 32, 0, 0), (64, 32)),  # 8-byte lengths
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x00junk" + bytes(40), (0, 0)),  # no codestream box
    (b"\x02\x00\x00\x00" + bytes(60), None),  # an RLE frame: no stated size
])
def test_codestream_size_reads_what_a_decoder_would_allocate(data, size):
    assert codestream_size(data) == size


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on its deliberately odd files
def test_every_dicom_file_pydicom_ships_loads_or_is_refused_with_a_reason():
    """70 real DICOM files of every transfer syntax (pydicom's own test files, offline)."""
    import pydicom

    files = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
    outcomes = {}
    for f in files:
        try:
            outcomes[f.name] = load_image(f).pixels.shape
        except ImageLoadError as exc:
            outcomes[f.name] = exc.reason
    assert len(files) >= 60
    # deflated, JPEG, JPEG-LS, JPEG 2000, RLE, multi-frame, big endian: what the app must read
    for name, shape in [("image_dfl.dcm", (512, 512)), ("SC_rgb_jpeg_dcmtk.dcm", (100, 100, 3)),
                        ("MR_small_jpeg_ls_lossless.dcm", (64, 64)), ("JPEG2000.dcm", (1024, 256)),
                        ("SC_rgb_rle_2frame.dcm", (100, 100, 3)), ("examples_ybr_color.dcm", (240, 320, 3)),
                        ("MR_small_bigendian.dcm", (64, 64)), ("examples_jpeg2k.dcm", (480, 640, 3))]:
        assert outcomes[name] == shape, (name, outcomes[name])
    assert sum(isinstance(o, tuple) for o in outcomes.values()) >= 40


@pytest.mark.parametrize("mode, dtype", [("I;16", np.uint16), ("F", np.float32)])
def test_a_high_depth_slice_is_scaled_without_float64_copies(tmp_path, mode, dtype):
    """A 3000² 16-bit or float slice: float64 temporaries took six times the float32 output at peak."""
    rng = np.random.default_rng(0)
    raw = rng.integers(1000, 40000, (3000, 3000)).astype(dtype)
    path = tmp_path / "slice.tiff"
    Image.fromarray(raw, mode).save(path)
    loaded, peak = _peak_traced_bytes(lambda: load_image(path))
    assert peak < 2.5 * loaded.pixels.nbytes, f"{peak / loaded.pixels.nbytes:.1f}× the output at peak"
    as_before = ((raw.astype(np.float64) - raw.min()) / (raw.max() - raw.min())).astype(np.float32)
    assert np.abs(loaded.pixels - as_before).max() <= 6e-8  # one float32 step below 1, at most


def _enhanced_mr(per_frame_window=None, shared_window=None, rescale=None) -> bytes:
    """MR_small as a 3-frame enhanced-style image: no window or rescale at the top level, only in functional
    groups (frame 1's own, or shared by all frames)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = mr_series()
    del ds.WindowCenter, ds.WindowWidth

    def group(window=None, slope_intercept=None):
        g = Dataset()
        if window:
            g.FrameVOILUTSequence = Sequence([Dataset()])
            g.FrameVOILUTSequence[0].WindowCenter, g.FrameVOILUTSequence[0].WindowWidth = window
        if slope_intercept:
            g.PixelValueTransformationSequence = Sequence([Dataset()])
            item = g.PixelValueTransformationSequence[0]
            item.RescaleSlope, item.RescaleIntercept, item.RescaleType = *slope_intercept, "US"
        return g

    ds.PerFrameFunctionalGroupsSequence = Sequence([group(per_frame_window, rescale), group((1, 1)), group((2, 2))])
    ds.SharedFunctionalGroupsSequence = Sequence([group(shared_window)])
    return dicom_bytes(ds)


@pytest.mark.parametrize("kwargs, window", [
    ({"per_frame_window": (600, 1600), "shared_window": (999, 10)}, "center 600 / width 1600"),
    ({"shared_window": (600, 1600)}, "center 600 / width 1600"),
    # stored × 2 − 100 under window 1100/3200 is the same mapping as stored under 600/1600
    ({"per_frame_window": (1100, 3200), "rescale": (2, -100)}, "center 1100 / width 3200"),
])
def test_an_enhanced_mr_uses_the_window_and_rescale_of_its_functional_groups(tmp_path, kwargs, window):
    from pydicom.data import get_testdata_file

    classic = load_image(get_testdata_file("MR_small.dcm", download=False))  # window 600/1600 at the top level
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(_enhanced_mr(**kwargs))
    loaded = load_image(path)
    assert loaded.info["window"] == f"{window} (from the file, frame 1's functional groups)"
    assert loaded.info["frame"] == "frame 1 of 3 used"
    np.testing.assert_allclose(loaded.pixels, classic.pixels, atol=1e-6)


# ---------------------------------------------------------------- choosing a frame
def _mr_series(compress: str | None = None) -> bytes:
    """MR_small as 3 frames that differ (the slice, half of it, a third of it), native or compressed."""
    ds = mr_series()
    del ds.WindowCenter, ds.WindowWidth  # a percentile window of each frame's own values
    if compress:
        ds.compress(compress)
    return dicom_bytes(ds)


@pytest.mark.parametrize("compress", [None, "1.2.840.10008.1.2.5"])  # native, RLE Lossless
def test_a_chosen_frame_of_a_dicom_series_is_the_one_decoded(tmp_path, compress):
    path = tmp_path / "series.dcm"
    path.write_bytes(_mr_series(compress))
    frames = [load_image(path, frame=k) for k in (1, 2, 3)]
    assert [f.frames for f in frames] == [3, 3, 3]
    assert [f.info["frame"] for f in frames] == ["frame 1 of 3 used", "frame 2 of 3 used", "frame 3 of 3 used"]
    raw = mr_small().pixel_array.astype(np.float64)
    for divisor, f in zip((1, 2, 3), frames):
        stored = raw // divisor
        lo, hi = np.percentile(stored, [0.5, 99.5])  # each frame windowed on its own values
        assert f.info["window"] == f"center {(lo + hi) / 2:g} / width {hi - lo:g} (0.5–99.5 percentile, none in file)"
        np.testing.assert_allclose(f.pixels, np.clip((stored - lo) / (hi - lo), 0, 1), atol=1e-6)


def _pages_tiff(path: Path) -> Path:
    pages = [Image.fromarray(np.full((40, 60), v, np.uint8)) for v in (10, 200)] + [Image.new("L", (100, 100))]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


@pytest.mark.parametrize("kind", ["native", "rle", "enhanced", "tiff", "png"])
def test_load_frames_gives_every_frame_as_load_image_does(tmp_path, kind, monkeypatch):
    import tumortrace.images as images

    path = tmp_path / ("x.tiff" if kind == "tiff" else "x.png" if kind == "png" else "x.dcm")
    if kind == "tiff":
        _pages_tiff(path)
    elif kind == "png":
        Image.fromarray(np.arange(32 * 40, dtype=np.uint16).reshape(32, 40).astype(np.uint8)).save(path)
    else:
        path.write_bytes({"native": _mr_series, "rle": lambda: _mr_series("1.2.840.10008.1.2.5"),
                          "enhanced": lambda: _enhanced_mr(per_frame_window=(600, 1600))}[kind]())
    one_by_one = []
    frames = load_image(path).frames
    for k in range(1, frames + 1):
        one_by_one.append(load_image(path, frame=k))
    parses, read_dicom = [], images._read_dicom
    monkeypatch.setattr(images, "_read_dicom", lambda *a: parses.append(a) or read_dicom(*a))
    all_at_once = list(load_frames(path))
    assert len(all_at_once) == frames == (1 if kind == "png" else 3)
    for a, b in zip(all_at_once, one_by_one):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert (a.info, a.frames) == (b.info, b.frames)
    if kind in ("native", "rle", "tiff"):  # frames that differ: not the first again (pydicom caches one array)
        assert len({a.pixels.tobytes() for a in all_at_once}) == 3
    assert len(parses) == (0 if kind in ("tiff", "png") else 1)


def test_load_frames_stops_at_a_frame_that_cannot_be_decoded(tmp_path):
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom_dataset_from(_mr_series("1.2.840.10008.1.2.5"))
    frames = list(generate_frames(ds.PixelData, number_of_frames=3))
    ds.PixelData = encapsulate([frames[0], frames[1][:70], frames[2]])  # frame 2 cut short
    path = tmp_path / "series.dcm"
    path.write_bytes(dicom_bytes(ds))
    got = []
    with pytest.raises(ImageLoadError, match="cannot be decoded"):
        for image in load_frames(path):
            got.append(image)
    assert len(got) == 1 and got[0].info["frame"] == "frame 1 of 3 used"
    np.testing.assert_array_equal(got[0].pixels, load_image(path, frame=1).pixels)


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # pydicom, on a NumberOfFrames "abc"
@pytest.mark.parametrize("name", ["empty.png", "no_pixels.dcm", "random_bytes.png", "frames_not_a_number.dcm",
                                  "deflate_bomb.dcm", "jpeg_size_mismatch.dcm"])
def test_load_frames_refuses_what_load_image_refuses(tmp_path, name):
    path = write_case(tmp_path, name)
    with pytest.raises(ImageLoadError) as expected:
        load_image(path)
    with pytest.raises(ImageLoadError) as got:
        list(load_frames(path))
    assert got.value.reason == expected.value.reason


def test_a_chosen_frame_of_an_enhanced_mr_uses_its_own_functional_groups(tmp_path):
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(_enhanced_mr(per_frame_window=(600, 1600), shared_window=(999, 10)))
    second = load_image(path, frame=2)  # its per-frame window is 1/1, frame 3's 2/2
    assert second.info["window"] == "center 1 / width 1 (from the file, frame 2's functional groups)"
    assert second.info["frame"] == "frame 2 of 3 used"


def test_a_frame_past_the_last_is_refused_with_the_count(tmp_path):
    series, single = tmp_path / "series.dcm", tmp_path / "slice.png"
    series.write_bytes(_mr_series())
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(single)
    with pytest.raises(ImageLoadError, match="frame 4 was asked for, but the file has 3 frames"):
        load_image(series, frame=4)
    with pytest.raises(ImageLoadError, match="frame 2 was asked for, but the file has 1 frame$"):
        load_image(single, frame=2)
    assert load_image(single, frame=1).frames == 1


@pytest.mark.parametrize("frame", [0, -1, 1.5, True, "2"])
def test_a_frame_number_is_a_whole_number_from_1(tmp_path, frame):
    path = tmp_path / "slice.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    with pytest.raises(ValueError, match="whole numbers from 1"):
        load_image(path, frame=frame)


def test_a_chosen_page_of_a_tiff_is_checked_at_its_own_size(tmp_path):
    path = _pages_tiff(tmp_path / "pages.tiff")
    second = load_image(path, frame=2)
    assert second.pixels.shape == (40, 60) and np.allclose(second.pixels, 200 / 255)
    assert second.info["frame"] == "frame 2 of 3 used" and second.frames == 3
    with pytest.raises(ImageLoadError, match="image is 100×100 pixels .*possible decompression bomb"):
        load_image(path, max_pixels=5000, frame=3)  # page 1 is 2,400 pixels


def test_a_frame_of_a_gif_is_not_chosen(tmp_path):
    """Each GIF frame is drawn over the ones before it: reaching frame k decodes all k."""
    path = write_case(tmp_path, "animated.gif")
    assert load_image(path).info["frame"] == "frame 1 of 4 used"
    with pytest.raises(ImageLoadError, match="frames are chosen in multi-frame DICOM and multi-page TIFF files, "
                                             "not in GIF"):
        load_image(path, frame=2)


def _two_jpeg_frames(sides: tuple[int, int], extended_offsets: str | None = None) -> bytes:
    """A 2-frame 8-bit JPEG DICOM stating 64×64, its codestreams sides[0]² and sides[1]². ``extended_offsets``:
    "true" (an Extended Offset Table as written) or "swapped" (the table sends frame 1 to the second
    codestream, as pydicom's decoder then follows it)."""
    from pydicom.encaps import encapsulate, encapsulate_extended

    ds = mr_8bit("JPEG", 64)
    ds.NumberOfFrames = 2
    frames = [ramp_codestream("JPEG", side) for side in sides]
    if extended_offsets is None:
        ds.PixelData = encapsulate(frames, has_bot=True)
    else:
        ds.PixelData, offsets, lengths = encapsulate_extended(frames)
        if extended_offsets == "swapped":
            offsets, lengths = offsets[8:] + offsets[:8], lengths[8:] + lengths[:8]
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = offsets, lengths
    return dicom_bytes(ds)


@pytest.mark.parametrize("sides, extended_offsets, bomb_frame", [
    ((64, 4096), None, 2),  # found through the Basic Offset Table
    ((64, 4096), "true", 2),
    ((4096, 64), "swapped", 2),  # the first codestream in the file is the bomb; the table makes it frame 2
])
def test_a_compressed_frame_is_checked_where_the_decoder_finds_it(tmp_path, sides, extended_offsets, bomb_frame):
    """Each frame's codestream states its size; the one chosen is checked before it is decoded."""
    path = tmp_path / "series.dcm"
    path.write_bytes(_two_jpeg_frames(sides, extended_offsets))
    assert load_image(path, frame=3 - bomb_frame).pixels.shape == (64, 64)

    def refused():
        with pytest.raises(ImageLoadError, match="4096×4096 pixels but the DICOM header says 64×64"):
            load_image(path, frame=bomb_frame)

    _, peak = _peak_traced_bytes(refused)
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB at peak"


@pytest.mark.parametrize("name", ["multiframe.dcm", "mr_deflated.dcm", "dicom_without_extension", "multipage.tiff",
                                  "cmyk.jpg", "deflate_bomb.dcm", "jpeg_size_mismatch.dcm", "truncated.png"])
def test_bytes_in_memory_load_as_the_file_does(tmp_path, name):
    path = write_case(tmp_path, name)
    nameless = path.with_name("upload")  # a DICOM upload need not be called .dcm
    data = path.read_bytes()
    try:
        from_file = load_image(path)
    except ImageLoadError as exc:
        with pytest.raises(ImageLoadError) as info:
            load_image(nameless, data=data)
        assert info.value.reason == exc.reason
        return
    from_memory = load_image(nameless, data=data)
    np.testing.assert_array_equal(from_memory.pixels, from_file.pixels)
    assert (from_memory.info, from_memory.frames) == (from_file.info, from_file.frames)
    assert not nameless.exists()


def test_a_decoding_failure_says_whether_a_decoder_is_missing_or_the_data_is_damaged(tmp_path):
    from pydicom.uid import HTJ2KLossless, JPEGBaseline8Bit

    for syntax, expected in [(HTJ2KLossless, "no decoder for High-Throughput JPEG 2000 Image Compression "
                                             "(Lossless Only) is installed here (pydicom's options: pylibjpeg"),
                             (JPEGBaseline8Bit, "the JPEG Baseline (Process 1) pixel data is damaged")]:
        from pydicom.encaps import encapsulate, get_frame

        ds = pydicom_dataset_from(compressed_dicom("JPEG", 64, 64))
        ds.file_meta.TransferSyntaxUID = syntax
        jpeg = get_frame(ds.PixelData, 0, number_of_frames=1)
        sof, sos = jpeg.index(b"\xff\xc0"), jpeg.index(b"\xff\xda")
        sof_end = sof + 2 + struct.unpack(">H", jpeg[sof + 2:sof + 4])[0]
        ds.PixelData = encapsulate([b"\xff\xd8" + jpeg[sof:sof_end] + jpeg[sos:]])  # no Huffman tables: no decoder
        # accepts it (a scan cut short, by contrast, decodes as gray)
        path = tmp_path / "broken.dcm"
        path.write_bytes(dicom_bytes(ds))
        with pytest.raises(ImageLoadError, match="cannot be decoded") as info:
            load_image(path)
        assert expected in info.value.reason, info.value.reason
        assert info.value.reason.count("pylibjpeg-openjpeg") <= 1  # pydicom's own message lists them too


def pydicom_dataset_from(data: bytes):
    import pydicom
    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # pydicom, on the "ab  " below
def test_a_chosen_frame_of_an_enhanced_mr_says_where_it_sits_in_the_series(tmp_path):
    """Stack and temporal position from the frame's Frame Content: which slice and which phase of a series."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(io.BytesIO(_enhanced_mr(shared_window=(600, 1600))))
    for k, (stack, temporal) in enumerate([("1", 2), ("<b>Jane</b>", 1), (None, None)]):
        content = Dataset()
        content.InStackPositionNumber = k + 4
        if stack:
            content.StackID = stack
        if temporal:
            content.TemporalPositionIndex = temporal
        if stack or temporal:
            ds.PerFrameFunctionalGroupsSequence[k].FrameContentSequence = Sequence([content])
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(dicom_bytes(ds))
    notes = [load_image(path, frame=k).info["frame"] for k in (1, 2, 3)]
    assert notes == ["frame 1 of 3 used (stack 1, position 4 of the stack; temporal position 2)",
                     "frame 2 of 3 used (position 5 of the stack; temporal position 1)",  # not an ID: left out
                     "frame 3 of 3 used"]
    # frame 1's In-Stack Position Number as an IS "ab  ", which pydicom cannot convert when it is read
    good = b"\x20\x00\x57\x90UL\x04\x00\x04\x00\x00\x00"
    data = dicom_bytes(ds)
    assert data.count(good) == 1
    path.write_bytes(data.replace(good, b"\x20\x00\x57\x90IS\x04\x00ab  "))
    assert load_image(path, frame=1).info["frame"] == "frame 1 of 3 used (temporal position 2)"  # not a number


def test_a_frame_content_pydicom_cannot_read_costs_only_the_note(tmp_path, monkeypatch):
    from pydicom.errors import BytesLengthException

    import tumortrace.images as images

    def unreadable(ds, index):
        raise BytesLengthException("a UL in 3 bytes")  # as pydicom raises when such a value is first read

    monkeypatch.setattr(images, "_frame_position", unreadable)
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(_enhanced_mr(shared_window=(600, 1600)))
    assert load_image(path, frame=2).info["frame"] == "frame 2 of 3 used"


def _png_with_chunk_after_ihdr(image: Image.Image, kind: bytes, data: bytes) -> bytes:
    from tumortrace.png import chunk
    png = _png_bytes(image)
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR's length and kind, its 13 bytes, its CRC
    return png[:ihdr_end] + chunk(kind, data) + png[ihdr_end:]


def _pillows_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return _float_the_slow_way(im.convert("RGB") if im.mode == "P" else im)


def _two_bit_gray_png(values: np.ndarray) -> bytes:
    """A grayscale PNG of bit depth 2 (Pillow writes only 8- and 16-bit grayscale): ``values`` in 0..3."""
    import zlib

    from tumortrace.png import SIGNATURE, chunk
    height, width = values.shape
    padded = np.zeros((height, -(-width // 4) * 4), np.uint8)
    padded[:, :width] = values
    packed = (padded[:, 0::4] << 6) | (padded[:, 1::4] << 4) | (padded[:, 2::4] << 2) | padded[:, 3::4]
    rows = np.hstack([np.zeros((height, 1), np.uint8), packed])  # filter type 0 on every row
    return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 2, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes())) + chunk(b"IEND", b""))


_NOISE = np.random.default_rng(11).integers(0, 256, (29, 41, 3), dtype=np.uint8)
_GRAY3 = np.repeat(_NOISE[..., :1], 3, axis=2)


@pytest.mark.parametrize("name, data, at_once", [
    ("8-bit gray", _png_bytes(Image.fromarray(_NOISE[..., 0])), True),
    ("8-bit RGB", _png_bytes(Image.fromarray(_NOISE)), True),
    ("8-bit RGB, equal channels", _png_bytes(Image.fromarray(_GRAY3)), True),
    ("with a gAMA chunk (applied by neither decoder)",
     _png_with_chunk_after_ihdr(Image.fromarray(_NOISE), b"gAMA", struct.pack(">I", 22727)), True),
    ("2-bit gray (Pillow's mode L too)", _two_bit_gray_png(_NOISE[..., 0] >> 6), False),
    ("palette", _png_bytes(Image.fromarray(_NOISE).convert("P")), False),
    ("gray with a transparent value", _png_bytes(Image.fromarray(_NOISE[..., 0]), transparency=7), False),
    ("16-bit gray", _png_bytes(Image.fromarray(_NOISE[..., 0].astype(np.uint16) * 257)), False),
])
def test_a_plain_png_is_decoded_in_one_call_to_the_same_pixels(tmp_path, name, data, at_once, monkeypatch):
    """8-bit gray and RGB PNGs (what scanners and BUSI write) take OpenCV's one-call decode; every other PNG
    Pillow's, as before. Either way the pixels are Pillow's."""
    import cv2

    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    path = tmp_path / "slice.png"
    path.write_bytes(data)
    for loaded in (load_image(path), load_image(path, data=data)):
        if data[25] == 0 and data[24] == 16:  # 16-bit: scaled from its own range (its own test)
            assert loaded.pixels.shape == (29, 41)
        else:
            np.testing.assert_array_equal(loaded.pixels, _pillows_pixels(data))
        assert loaded.pixels.dtype == np.float32 and loaded.pixels.flags.c_contiguous
    assert len(calls) == (2 if at_once else 0), name


def test_a_png_libpng_refuses_but_pillow_reads_is_read_by_pillow(tmp_path):
    """libpng checks each IDAT chunk's CRC, Pillow does not: such a file loaded before, and still does, by
    Pillow, from the start of its data (the one-call attempt read the whole file first)."""
    data = bytearray(_png_bytes(Image.fromarray(_NOISE)))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    data[idat + 4 + length] ^= 0xFF  # the first byte of the IDAT's CRC
    import cv2
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED) is None
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(load_image(path).pixels, _pillows_pixels(bytes(data)))
