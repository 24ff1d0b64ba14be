"""Reading one image slice from disk: PNG, JPEG, TIFF, BMP, GIF, 8/16-bit/float grayscale, and DICOM.

Every reader returns float32 pixels in [0, 1] (H×W grayscale or H×W×3 RGB) plus a small ``info`` dict
that says what was done (frame used, DICOM window, 16-bit scaling). Of a multi-frame DICOM or a
multi-page TIFF one frame is decoded, the first unless another is asked for. ``info`` never holds DICOM
identifying tags. Every failure is an :class:`ImageLoadError` naming the file and the problem.
"""
from __future__ import annotations

import io
import os
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # ~7000×7000; above this an upload is refused before decoding
MIN_SIDE = 16
MAX_ASPECT = 20.0
MAX_FILE_BYTES = 200 * 1024 * 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm", ".dicom"}


class ImageLoadError(ValueError):
    """A file that cannot be used as an image slice; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{Path(self.path).name}: {reason}")


@dataclass
class LoadedImage:
    pixels: np.ndarray  # float32 in [0, 1], H×W or H×W×3
    info: dict = field(default_factory=dict)
    frames: int = 1  # frames (pages) in the file, of which ``pixels`` is one

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.pixels.shape[1], self.pixels.shape[0]


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, frame: int = 1,
               data: bytes | None = None) -> LoadedImage:
    """One slice of the file at ``path``: frame ``frame`` (counted from 1, as DICOM numbers frames) of a
    multi-frame DICOM or a multi-page TIFF, the only frame of anything else.

    ``data``: the file's bytes, where they are already in memory; ``path`` then names the file in
    messages and, by its suffix, may say it is DICOM."""
    path = Path(path)
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 1:
        raise ValueError(f"frame numbers are whole numbers from 1, not {frame!r}")
    frame = int(frame)
    _check_file_size(path, data)
    if _looks_like_dicom(path, data):
        with _dicom_errors(path):
            loaded = _dicom_frame(path, _dicom_with_pixels(path, data, max_pixels), frame)
    else:
        loaded = _load_pillow(path, max_pixels, frame, data)
    _check_geometry(path, loaded.pixels.shape[1], loaded.pixels.shape[0])
    return loaded


def load_frames(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Iterator[LoadedImage]:
    """Every frame of the file at ``path`` in order (one for a single-frame file), as :func:`load_image`
    gives each, from one read of the file and, for DICOM, one parse: reading a 120-frame series frame by
    frame with ``load_image`` re-reads and re-parses the whole file for each. A frame that cannot be
    decoded raises its :class:`ImageLoadError` when it is reached, after the frames before it."""
    path = Path(path)
    _check_file_size(path, None)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageLoadError(path, f"cannot be opened ({exc.strerror or exc})") from None
    if not _looks_like_dicom(path, data):
        first = load_image(path, max_pixels, 1, data)
        yield first
        for frame in range(2, first.frames + 1):
            yield load_image(path, max_pixels, frame, data)
        return
    with _dicom_errors(path):
        ds = _dicom_with_pixels(path, data, max_pixels)
        frames = _frame_count(ds)
    del data  # the dataset holds what it needs
    for frame in range(1, frames + 1):
        with _dicom_errors(path):
            loaded = _dicom_frame(path, ds, frame)
        _check_geometry(path, loaded.pixels.shape[1], loaded.pixels.shape[0])
        yield loaded


def _check_file_size(path: Path, data: bytes | None) -> None:
    if data is not None:
        nbytes = len(data)
    else:
        try:
            nbytes = path.stat().st_size
        except OSError as exc:
            raise ImageLoadError(path, f"cannot be opened ({exc.strerror or exc})") from None
    if nbytes == 0:
        raise ImageLoadError(path, "file is empty (0 bytes)")
    if nbytes > MAX_FILE_BYTES:
        raise ImageLoadError(path, f"file is {nbytes / 2**20:.0f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB")


@contextmanager
def _dicom_errors(path: Path):
    """pydicom converts a value when it is first read, so a malformed one raises wherever that is: every
    failure in reading a DICOM becomes an ImageLoadError naming the file."""
    try:
        yield
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(path, f"DICOM file is damaged ({type(exc).__name__}: {exc})") from None


def _open(path: Path, data: bytes | None):
    return io.BytesIO(data) if data is not None else open(path, "rb")


def check_frame_number(path: str | os.PathLike, frame: int, frames: int) -> None:
    """Refuse frame ``frame`` (counted from 1) of a file of ``frames`` frames, saying how many it has."""
    if frame > frames:
        raise ImageLoadError(path, f"frame {frame} was asked for, but the file has {frames} "
                                   f"frame{'s' if frames > 1 else ''}")


def _frame_note(frame: int, frames: int, where: str = "") -> dict:
    return {"frame": f"frame {frame} of {frames} used{where}"} if frames > 1 else {}


def _frame_position(ds, index: int) -> str:
    """Where frame ``index`` of an enhanced (multi-frame) MR sits in its series, from its Frame Content:
    " (stack 1, position 12 of the stack; temporal position 3)". Empty for files that do not say."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) <= index:
        return ""
    content = (per_frame[index].get("FrameContentSequence") or [None])[0]
    if content is None:
        return ""
    parts = []
    position = _whole_number(content.get("InStackPositionNumber"))
    temporal = _whole_number(content.get("TemporalPositionIndex"))
    if position is not None:
        stack = str(content.get("StackID") or "")
        stack = f"stack {stack}, " if re.fullmatch(r"[\w.-]{1,16}", stack) else ""  # an ID, never free text
        parts.append(f"{stack}position {position} of the stack")
    if temporal is not None:
        parts.append(f"temporal position {temporal}")
    return f" ({'; '.join(parts)})" if parts else ""


def _whole_number(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _looks_like_dicom(path: Path, data: bytes | None = None) -> bool:
    if path.suffix.lower() in {".dcm", ".dicom"}:
        return True
    try:
        with _open(path, data) as f:
            head = f.read(132)
    except OSError as exc:  # e.g. removed since load_image's stat (a concurrent request deleting its upload)
        raise ImageLoadError(path, f"cannot be opened ({exc.strerror or exc})") from None
    return head[128:132] == b"DICM"


def _check_geometry(path: Path, width: int, height: int, max_pixels: int | None = None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            path, f"image is {width}×{height} pixels ({width * height / 1e6:.0f} MP); the limit is "
                  f"{max_pixels / 1e6:.0f} MP (possible decompression bomb)")
    if min(width, height) < MIN_SIDE:
        raise ImageLoadError(path, f"image is only {width}×{height} pixels; at least {MIN_SIDE}×{MIN_SIDE} is needed")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageLoadError(path, f"image is {width}×{height}: aspect ratio above {MAX_ASPECT:.0f}:1 is not a slice")


def _load_pillow(path: Path, max_pixels: int, frame: int = 1, data: bytes | None = None) -> LoadedImage:
    info: dict = {}
    try:
        # Between its own limit (~89 MP) and twice that Pillow only warns, and _check_geometry's lower limit
        # refuses the image right after. That warning is not made an error: warnings.catch_warnings swaps the
        # process's filter list and is not thread-safe, and uploads are decoded on several threads at once.
        with _open(path, data) as fp, Image.open(fp) as im:
            info["format"] = im.format
            _check_geometry(path, im.width, im.height, max_pixels)
            n_frames = getattr(im, "n_frames", 1)
            check_frame_number(path, frame, n_frames)
            if frame > 1 and im.format != "TIFF":
                # A GIF or APNG frame is drawn over the ones before it: reaching frame k decodes k frames.
                raise ImageLoadError(path, f"frame {frame} was asked for; frames are chosen in multi-frame "
                                           f"DICOM and multi-page TIFF files, not in {im.format}")
            if n_frames > 1:
                im.seek(frame - 1)
                _check_geometry(path, im.width, im.height, max_pixels)  # each TIFF page has its own size
                info.update(_frame_note(frame, n_frames))
            im = ImageOps.exif_transpose(im) if im.format == "JPEG" else im
            at_once = _plain_png_at_once(fp, im, n_frames)
            if at_once is not None:
                info["mode"] = im.mode
                return LoadedImage(_unit_float(at_once), info, n_frames)
            im.load()
            pixels = _pillow_to_array(path, im, info)
    except ImageLoadError:
        raise
    except FileNotFoundError as exc:
        raise ImageLoadError(path, f"cannot be opened ({exc.strerror or exc})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not a recognised image (expected PNG, JPEG, TIFF, BMP or DICOM)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(path, f"image has too many pixels; the limit is {max_pixels / 1e6:.0f} MP "
                                   "(possible decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(path, f"image data is corrupt or truncated ({exc})") from None
    return LoadedImage(pixels, info, n_frames)


def _plain_png_at_once(fp, im: Image.Image, n_frames: int) -> np.ndarray | None:
    """The pixels of an 8-bit grayscale or RGB PNG (one frame, no transparency) as uint8, H×W (or H×W×3 with
    unequal channels), decoded by OpenCV's libpng in one call; None for any other file, or one it cannot
    decode, which Pillow then decodes as before (and refuses with its own reason).

    Why: the app decodes an upload on a thread of its own while its event loop answers the client
    (tumortrace.uploads.DecodeAhead), and both need the GIL. Pillow's PNG decoder takes it back between
    chunks of the file; ``cv2.imdecode`` gives it up once for the whole decode, and is a little quicker
    (``load_image`` of the 766×588 example in 0.87× the time). The same values as Pillow's to the bit
    (tested); what libpng's stricter checks refuse (an IDAT's CRC, which Pillow does not check) Pillow reads.
    One client calling right after its upload: 0.96–0.97× the round trip (benchmarks/HISTORY.md).

    ``im``: the file opened by Pillow, header only, its size already checked against the pixel limit."""
    if im.format != "PNG" or n_frames != 1 or im.mode not in ("L", "RGB") or "transparency" in im.info:
        return None
    fp.seek(0)
    data = fp.read()
    # IHDR, the first chunk: bit depth and colour type, which Pillow's mode does not tell apart (a 2- or 4-bit
    # grayscale PNG is mode L too).
    if data[12:16] != b"IHDR" or len(data) < 29 or data[24] != 8 or data[25] not in (0, 2):
        return None
    import cv2  # grad-cam's dependency: installed wherever the app is

    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if (decoded is None or decoded.dtype != np.uint8 or decoded.shape[:2] != (im.height, im.width)
            or decoded.ndim != (2 if im.mode == "L" else 3) or decoded.shape[2:] not in ((), (3,))):
        return None
    return decoded if decoded.ndim == 2 else _collapse_gray(decoded[..., ::-1])  # OpenCV's order is BGR


def _pillow_to_array(path: Path, im: Image.Image, info: dict) -> np.ndarray:
    mode = im.mode
    info["mode"] = mode
    if mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        return _scale_high_depth(path, np.asarray(im), info)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in {"1", "CMYK", "YCbCr", "LAB", "HSV"}:
        im = im.convert("L" if mode == "1" else "RGB")
    elif mode in {"I;16S", "I;32"}:
        raise ImageLoadError(path, f"pixel mode {mode} is not supported")
    if im.mode in {"RGBA", "LA", "PA"}:
        # Composite over black: scanners pad with black, and a white matte would read as tissue.
        info["alpha"] = "transparent pixels composited over black"
        rgba = _unit_float(np.asarray(im.convert("RGBA")))
        rgb = rgba[..., :3] * rgba[..., 3:4]
        return _collapse_gray(rgb)
    arr = np.asarray(im)
    return _unit_float(_collapse_gray(arr) if arr.ndim == 3 else arr)


def _unit_float(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixels as float32 in [0, 1]: the same values as ``np.asarray(im, dtype=np.float32) / 255``, which
    takes 2.7 ms for a 766×588 gray slice (5.6 ms RGB) against 0.2 ms (0.6) for this, on the request path."""
    return np.divide(pixels, np.float32(255), dtype=np.float32)


def _collapse_gray(rgb: np.ndarray) -> np.ndarray:
    """An RGB image whose channels are equal is grayscale: keep it as one channel (any dtype, kept)."""
    rgb = np.ascontiguousarray(rgb[..., :3])
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0].copy()
    return rgb


def _scale_high_depth(path: Path, arr: np.ndarray, info: dict, low: float | None = None,
                      high: float | None = None) -> np.ndarray:
    """Pixels of any integer or float dtype → float32 in [0, 1], ``low``…``high`` (default: min…max) → 0…1.

    In float32 and in place: float64 temporaries took six times the output (366 MiB at peak for a
    16 MP 16-bit slice, 1.25 GiB at the 50 MP limit). Integer pixels below 2^24 subtract exactly."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageLoadError(path, "pixel values contain NaN or infinity")
    if low is None or high is None:
        # Min–max, not a fixed 0–65535 range: MRI often uses a narrow part of 16 bits and must not saturate.
        low, high = float(arr.min()), float(arr.max())
        info["intensity_scaling"] = f"min–max {low:g}…{high:g} → 0…1"
    if high <= low:
        info["warning"] = "image is uniform (one intensity value)"
        return np.zeros(arr.shape, dtype=np.float32)
    out = np.subtract(arr, low, dtype=np.float32)
    out /= np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out)


def _dicom_with_pixels(path: Path, data: bytes | None, max_pixels: int):
    """The file's dataset, once it is known to hold an image of an acceptable size."""
    ds = _read_dicom(path, data)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageLoadError(path, "DICOM file has no pixel data (not an image, e.g. a report or header only)")
    _check_geometry(path, int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), max_pixels)
    return ds


def _frame_count(ds) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _dicom_frame(path: Path, ds, frame: int) -> LoadedImage:
    """Frame ``frame`` (from 1) of a dataset from :func:`_dicom_with_pixels`, windowed to [0, 1]."""
    from pydicom.pixels import apply_modality_lut, pixel_array

    info = {"format": "DICOM", "modality": str(ds.get("Modality", "unknown"))}
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    n_frames = _frame_count(ds)
    check_frame_number(path, frame, n_frames)
    index = frame - 1
    _check_compressed_frame_size(path, ds, n_frames, cols, rows, index)
    try:
        # The slice shown, not a whole compressed series; not ds.pixel_array, which would hand
        # load_frames its first frame again (pydicom caches it whatever the index asked for).
        arr = pixel_array(ds, index=index if n_frames > 1 else None)
    except Exception as exc:
        raise ImageLoadError(path, f"DICOM pixel data cannot be decoded: {_decoder_hint(ds, exc)}") from None
    try:
        position = _frame_position(ds, index)
    except Exception:  # a malformed Frame Content: the slice is still usable, only the note is lost
        position = ""
    info.update(_frame_note(frame, n_frames, position))
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples == 3:
        return LoadedImage(_scale_high_depth(path, arr, info, 0.0, float(max(arr.max(), 1))), info, n_frames)
    rescale, voi, where = _frame_pixel_module(ds, index)
    arr = apply_modality_lut(arr, rescale)  # the stored integers, or float64 where the file rescales them
    center, width = _first(voi.get("WindowCenter")), _first(voi.get("WindowWidth"))
    if center is not None and width is not None and float(width) > 0:
        center, width = float(center), float(width)
        info["window"] = f"center {center:g} / width {width:g} (from the file{where})"
    else:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 0.0))
        center, width = (lo + hi) / 2, max(hi - lo, 1e-6)
        info["window"] = f"center {center:g} / width {width:g} (0.5–99.5 percentile, none in file)"
    pixels = _scale_high_depth(path, arr, info, center - width / 2, center + width / 2)
    info.pop("intensity_scaling", None)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = 1.0 - pixels
        info["inverted"] = "MONOCHROME1 shown inverted"
    return LoadedImage(pixels, info, n_frames)


def _decoder_hint(ds, exc: Exception) -> str:
    """Why decoding failed: damaged data where pydicom has a decoder for the file's transfer syntax here,
    else which packages would give it one."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID", None)
    name = getattr(syntax, "name", str(syntax))
    try:
        decoder = get_decoder(syntax)
    except Exception:  # NotImplementedError for a syntax pydicom cannot decode at all; a missing or bad UID
        return f"pydicom cannot decode the transfer syntax {name} ({exc})"
    if decoder.is_available:
        return f"the {name} pixel data is damaged or not what the header says ({exc})"
    options = "; ".join(decoder.missing_dependencies)
    return f"no decoder for {name} is installed here (pydicom's options: {options})"


def _frame_pixel_module(ds, index: int = 0):
    """(rescale, window, where) for frame ``index``: each a dataset holding the attributes pydicom reads.

    An enhanced (multi-frame) MR or CT keeps its rescale and window in functional groups, per frame or
    shared, not at the top level where classic images and ``apply_modality_lut`` have them."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) > index:
        groups.append(per_frame[index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])

    def found(sequence: str, keywords: tuple[str, ...]):
        for group in groups:
            for item in group.get(sequence) or []:
                if all(k in item for k in keywords):
                    return item
        return None

    rescale = ds if "RescaleSlope" in ds else found("PixelValueTransformationSequence", ("RescaleSlope",)) or ds
    voi = found("FrameVOILUTSequence", ("WindowCenter", "WindowWidth"))
    if "WindowCenter" in ds or voi is None:
        return rescale, ds, ""
    return rescale, voi, f", frame {index + 1}'s functional groups"


def _read_dicom(path: Path, data: bytes | None = None):
    """The file's pydicom dataset, once a deflated one is known to inflate to at most MAX_FILE_BYTES.

    pydicom inflates a Deflated Explicit VR Little Endian dataset whole, in memory, before reading it: a
    25 MB upload of zeros would take ~25 GB in the server."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_dataset, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        with _open(path, data) as fp:
            read_preamble(fp, False)
            meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                                stop_when=lambda tag, vr, length: tag >> 16 != 2)  # the file meta group
            if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                _check_inflated_size(path, fp)
            fp.seek(0)
            return pydicom.dcmread(fp)
    except InvalidDicomError:
        raise ImageLoadError(path, "not a valid DICOM file (no DICM header)") from None
    except ImageLoadError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged files
        raise ImageLoadError(path, f"DICOM file is damaged ({type(exc).__name__}: {exc})") from None


def _check_compressed_frame_size(path: Path, ds, n_frames: int, cols: int, rows: int, index: int = 0) -> None:
    """A JPEG, JPEG-LS or JPEG 2000 frame is decoded at the size its codestream states, before pydicom
    compares it with Rows × Columns: a 5 MB upload stating 20000×20000 took 2 GiB. Check frame ``index``
    first, found as pydicom's decoder finds it."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if "PixelData" not in ds or syntax is None or not syntax.is_encapsulated:
        return
    from pydicom.encaps import get_frame

    offsets = ((ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
               if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds else None)
    try:
        frame = get_frame(ds.PixelData, index, number_of_frames=n_frames, extended_offsets=offsets)
    except Exception as exc:
        raise ImageLoadError(path, f"DICOM pixel data is damaged ({type(exc).__name__}: {exc})") from None
    size = codestream_size(frame)
    if size is not None and size != (cols, rows):
        raise ImageLoadError(path, f"compressed pixel data is {size[0]}×{size[1]} pixels but the DICOM header says "
                                   f"{cols}×{rows} (a damaged file or a decompression bomb)")


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}  # 0xF7: JPEG-LS


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) stated by a JPEG / JPEG-LS (SOF segment) or JPEG 2000 (SIZ segment) codestream;
    (0, 0) where it is cut short or its size cannot be found; None for anything else (RLE frames decode
    at Rows × Columns)."""
    if data[:2] == b"\xff\xd8":
        offset = 2
        while offset + 9 <= len(data):
            if data[offset] != 0xFF:
                return 0, 0
            marker = data[offset + 1]
            if marker in _JPEG_SOF:
                height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
                return width, height
            if marker == 0xFF:  # a fill byte before a marker
                offset += 1
            elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
                offset += 2
            else:
                offset += 2 + struct.unpack(">H", data[offset + 2:offset + 4])[0]
        return 0, 0
    start = 0
    if data[4:12] == b"jP  \r\n\x87\n":  # a JP2 file: the codestream is in its 'jp2c' box
        start = 12
        while data[start + 4:start + 8] != b"jp2c":
            length = int.from_bytes(data[start:start + 4], "big")
            if length == 1:  # the length is the 8 bytes after the type
                length = int.from_bytes(data[start + 8:start + 16], "big")
            if length < 8 or start + length + 8 > len(data):  # 0: the last box, and it is not the codestream
                return 0, 0
            start += length
        start += 16 if int.from_bytes(data[start:start + 4], "big") == 1 else 8
    if data[start:start + 4] == b"\xff\x4f\xff\x51":  # SOC, then SIZ
        if len(data) < start + 24:
            return 0, 0
        xsiz, ysiz, x0, y0 = struct.unpack(">IIII", data[start + 8:start + 24])
        return xsiz - x0, ysiz - y0
    return (0, 0) if start else None


def _check_inflated_size(path: Path, deflated, limit: int = MAX_FILE_BYTES) -> None:
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    while (chunk := deflated.read(1 << 16)) and not inflater.eof:
        while chunk:  # at most 1 MiB out per call: the inflated data is counted, never held
            total += len(inflater.decompress(chunk, 1 << 20))
            if total > limit:
                raise ImageLoadError(path, f"deflated DICOM data inflates to more than {limit // 2**20} MiB, the "
                                           "limit for a file (possible decompression bomb)")
            chunk = inflater.unconsumed_tail


def _first(value):
    if value is None:
        return None
    try:
        return value[0] if not isinstance(value, (str, bytes)) and len(value) else value
    except TypeError:
        return value
