"""Reading every frame of a multi-frame DICOM: ``load_frames`` (one read, one parse) against ``load_image``
called once per frame (what ``python -m tumortrace.predict --frame all`` did before), in one run.

    python benchmarks/frames.py [--frames 120] [--side 512] [--rounds 3]

The series is synthetic (MR_small's header from pydicom's test files, random 16-bit pixels), written to a
temporary folder in two encodings: native (uncompressed) and RLE Lossless. Each round times both ways on
both files, alternating; the figures are medians over the rounds, and the last line per encoding is the
ratio of the two in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import machine  # noqa: E402
from hostile import dicom_bytes, mr_small  # noqa: E402
from tumortrace.images import load_frames, load_image  # noqa: E402


def series(frames: int, side: int, compress: str | None) -> bytes:
    ds = mr_small()
    dtype = ds.pixel_array.dtype
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = frames
    pixels = np.random.default_rng(0).integers(0, 4000, (frames, side, side)).astype(dtype)
    if compress:
        ds.compress(compress, pixels)
    else:
        ds.PixelData = pixels.tobytes()
    return dicom_bytes(ds)


def one_by_one(path: Path) -> int:
    first = load_image(path)
    for frame in range(2, first.frames + 1):
        load_image(path, frame=frame)
    return first.frames


def all_at_once(path: Path) -> int:
    return sum(1 for _ in load_frames(path))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=120, help="frames in the series (default: 120)")
    p.add_argument("--side", type=int, default=512, help="rows = columns of each frame (default: 512)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, alternating the two ways (default: 3)")
    args = p.parse_args()
    encodings = {"native": None, "RLE Lossless": "1.2.840.10008.1.2.5"}
    print(f"# {machine.describe()}; {args.frames} frames of {args.side}×{args.side} 16-bit, {args.rounds} rounds, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| encoding | file MiB | load_image per frame ms | load_frames ms | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, syntax in encodings.items():
            path = Path(tmp) / "series.dcm"
            path.write_bytes(series(args.frames, args.side, syntax))
            times = {one_by_one: [], all_at_once: []}
            for _ in range(args.rounds):
                for way, samples in times.items():
                    t = time.perf_counter()
                    if way(path) != args.frames:
                        raise SystemExit(f"{way.__name__} did not read {args.frames} frames")
                    samples.append(time.perf_counter() - t)
            slow, fast = (statistics.median(times[w]) for w in (one_by_one, all_at_once))
            print(f"| {name} | {path.stat().st_size / 2**20:.2f} | {slow * 1e3:.1f} | {fast * 1e3:.1f} | {fast / slow:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
