"""The image loader against the hostile corpus (tests/hostile.py), plus a bounded fuzz run."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from hypothesis import HealthCheck, given, settings, strategies as st

from hostile import CASES, write_case
from tumortrace.images import ImageLoadError, LoadedImage, load_image


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
