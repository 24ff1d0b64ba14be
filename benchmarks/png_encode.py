"""The slice's lossless PNG: ``tumortrace.png.encode_png`` (Sub filter, ISA-L level 1) against OpenCV's encoder
with the settings the app used before it (zlib level 1, run-length strategy, Sub filter), in one run.

    python benchmarks/png_encode.py [--runs 15] [--synthetic 10] [--folder ../shared/data/busi --max-images 50]

Image sets: the shipped examples (BUSI ultrasound) as the app shows them (``display_pixels``); synthetic MR-like
slices (an ellipse of smooth tissue with Rician noise in an empty background, windowed so that the air is
0, as MR is after its window); with ``--folder``, up to ``--max-images`` images found under it, spread over
its sorted list. Per image, the two encoders alternate ``--runs`` times each and the medians are compared;
every PNG is decoded back and must equal the pixels (exit 1 if not). Per set: total ms of each encoder,
the median and range of the per-image time ratio and byte ratio, and the bytes of all the set's PNGs
together (a mask of a few KiB weighs little there however its ratio goes). Last line: the median time
ratio over all images.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import machine  # noqa: E402
from tumortrace.images import ImageLoadError, load_image  # noqa: E402
from tumortrace.inference import display_pixels  # noqa: E402
from tumortrace.png import encode_png  # noqa: E402

OPENCV_BEFORE = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                 cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]


def opencv_png(pixels: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, encoded = cv2.imencode(".png", bgr, OPENCV_BEFORE)
    if not ok:
        raise RuntimeError("OpenCV could not encode the image")
    return encoded.tobytes()


def mr_like(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    slices = []
    for k in range(count):
        side = (384, 512)[k % 2]
        yy, xx = np.mgrid[:side, :side]
        inside = ((xx - side / 2) / (0.45 * side)) ** 2 + ((yy - side / 2) / (0.3 * side)) ** 2 < 1
        tissue = cv2.GaussianBlur(rng.normal(0.5, 0.2, (side, side)).astype(np.float32), (0, 0), 2 + k % 3)
        noise = rng.normal(0, 0.03, (2, side, side))
        magnitude = np.hypot(np.where(inside, tissue, 0) + noise[0], noise[1])
        slices.append(np.uint8(np.clip((magnitude - 0.12) / 0.8, 0, 1) * 255 + 0.5))
    return slices


def shown(paths: list[Path]) -> list[np.ndarray]:
    images = []
    for path in paths:
        try:
            images.append(display_pixels(load_image(path)))
        except ImageLoadError:
            pass  # a folder may hold masks or notes beside the slices; the app would refuse these too
    return images


def decodes_to(png: bytes, pixels: np.ndarray) -> bool:
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if back is not None and back.ndim == 3:
        back = cv2.cvtColor(back, cv2.COLOR_BGR2RGB)
    return back is not None and np.array_equal(back, pixels)


def compare(pixels: np.ndarray, runs: int) -> tuple[float, float, int, int]:
    """Median ms of OpenCV and of encode_png, alternating, and the bytes of each."""
    times = {opencv_png: [], encode_png: []}
    for _ in range(runs):
        for encode, samples in times.items():
            t = time.perf_counter()
            encode(pixels)
            samples.append(time.perf_counter() - t)
    old, new = opencv_png(pixels), encode_png(pixels)
    if not (decodes_to(old, pixels) and decodes_to(new, pixels)):
        raise SystemExit(f"a PNG of a {pixels.shape} image does not decode to its pixels")
    return (statistics.median(times[opencv_png]) * 1e3, statistics.median(times[encode_png]) * 1e3,
            len(old), len(new))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=15, help="timed runs per image and encoder (default: 15)")
    p.add_argument("--synthetic", type=int, default=10, help="synthetic MR-like slices (default: 10)")
    p.add_argument("--folder", type=Path, help="also every image found under this folder (default: none)")
    p.add_argument("--max-images", type=int, default=50, help="at most this many from --folder (default: 50)")
    args = p.parse_args()

    sets = {"shipped examples (BUSI)": shown(sorted((ROOT / "examples").glob("*.png"))),
            "synthetic MR-like": mr_like(args.synthetic)}
    if args.folder:
        found = sorted(f for f in args.folder.rglob("*") if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".dcm"})
        step = max(1, len(found) // max(1, args.max_images))
        sets[str(args.folder)] = shown(found[::step][:args.max_images])
    print(f"# {machine.describe()}; OpenCV {cv2.__version__} (zlib level 1, RLE, Sub) against encode_png "
          f"(Sub, ISA-L level 1); {args.runs} runs per image and encoder, alternating; {time.strftime('%Y-%m-%d')}")
    print("| images | count | OpenCV ms (sum) | encode_png ms (sum) | time ratio median (min–max) "
          "| byte ratio median (min–max) | KiB, all (OpenCV → encode_png) |")
    print("|---|---|---|---|---|---|---|")
    every_ratio = []
    for name, images in sets.items():
        if not images:
            continue
        rows = [compare(pixels, args.runs) for pixels in images]
        time_ratio = [new / old for old, new, _, _ in rows]
        byte_ratio = [new / old for _, _, old, new in rows]
        every_ratio += time_ratio
        print(f"| {name} | {len(rows)} | {sum(r[0] for r in rows):.1f} | {sum(r[1] for r in rows):.1f} "
              f"| {statistics.median(time_ratio):.2f} ({min(time_ratio):.2f}–{max(time_ratio):.2f}) "
              f"| {statistics.median(byte_ratio):.3f} ({min(byte_ratio):.3f}–{max(byte_ratio):.3f}) "
              f"| {sum(r[2] for r in rows) / 1024:.0f} → {sum(r[3] for r in rows) / 1024:.0f} |")
    print(f"encode_png/OpenCV time ratio (median over {len(every_ratio)} images): {statistics.median(every_ratio):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
