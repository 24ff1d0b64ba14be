"""tumortrace.png: the slice's fast lossless PNG decodes, in Pillow and OpenCV, to exactly the pixels given."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from tumortrace.png import encode_png


def decoded(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(io.BytesIO(png)) as im:
        im.verify()  # every chunk's CRC
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        pillow = np.asarray(im)
    opencv = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if opencv.ndim == 3:
        opencv = cv2.cvtColor(opencv, cv2.COLOR_BGR2RGB)
    return pillow, opencv


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    found, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        found.append((png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return found


@pytest.mark.parametrize("shape", [(588, 766), (1, 1), (1, 300), (300, 1), (31, 17, 3), (1, 1, 3), (2, 1, 3)])
def test_it_decodes_to_the_same_pixels_gray_and_rgb(shape):
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    ramp = np.uint8(np.arange(shape[1]) * 7 % 256)
    pixels[: shape[0] // 2] = ramp[:, None] if len(shape) == 3 else ramp  # smooth half: what Sub is for
    for back in decoded(encode_png(pixels)):
        assert back.dtype == np.uint8 and np.array_equal(back, pixels)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([0, 3])).map(
    lambda s: s[:2] if s[2] == 0 else s)))
def test_any_gray_or_rgb_image_comes_back_exactly(pixels):
    """Sub's differences wrap around mod 256 (0 − 255, 255 − 0): any values, any size from 1×1."""
    for back in decoded(encode_png(pixels)):
        assert np.array_equal(back, pixels)


def test_a_view_that_is_not_contiguous_is_encoded_as_its_values():
    base = np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for view in (base[:, ::2], base[::-1], base[..., 0].T):
        for back in decoded(encode_png(view)):
            assert np.array_equal(back, view)


def test_every_row_is_sub_filtered_and_the_data_is_compressed():
    """A smooth slice (the case the Sub filter is for) deflates to a fraction of its raw size."""
    ramp = np.tile(np.uint8(np.arange(512) // 2), (512, 1))
    png = encode_png(ramp)
    kinds = [kind for kind, _ in chunks(png)]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour = struct.unpack(">IIBB", chunks(png)[0][1][:10])
    assert (width, height, depth, colour) == (512, 512, 8, 0)
    rows = np.frombuffer(zlib.decompress(chunks(png)[1][1]), np.uint8).reshape(512, 513)
    assert (rows[:, 0] == 1).all()
    assert len(png) < ramp.nbytes / 20


@pytest.mark.parametrize("pixels, message", [
    (np.zeros((8, 8), np.uint16), "uint8"),
    (np.zeros((8, 8), np.float32), "uint8"),
    (np.zeros((8, 8, 4), np.uint8), "H×W or H×W×3"),
    (np.zeros((8, 8, 2), np.uint8), "H×W or H×W×3"),
    (np.zeros(8, np.uint8), "H×W or H×W×3"),
    (np.zeros((0, 8), np.uint8), "non-empty"),
    (np.zeros((8, 0, 3), np.uint8), "non-empty"),
])
def test_what_it_cannot_encode_is_refused_with_the_reason(pixels, message):
    with pytest.raises(ValueError, match=message):
        encode_png(pixels)
