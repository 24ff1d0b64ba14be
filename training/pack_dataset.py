"""Copy a labelled dataset at one training size, losslessly, to move it to a GPU machine.

    python training/pack_dataset.py --data ../shared/data/busi --image-size 224 --out /tmp/busi224

Every image is written as the exact uint8 S×S array that training/train.py caches for --image-size S
(PNG, grayscale when the image is), so training on the copy at that size sees bit-identical inputs;
the split is the same (same duplicate_group, and the same keys for PNG sources; other formats are
written with a .png suffix, so their keys change). Masks are copied unchanged. Labels other
than benign/malignant are left out. Evaluate shipped models on the original data, not on the copy.
"""
from __future__ import annotations

import argparse
import csv
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumortrace import CLASSES  # noqa: E402
from tumortrace.data import DataError, decode_all, discover  # noqa: E402

log = logging.getLogger("pack_dataset")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data folder, any layout training/train.py reads")
    p.add_argument("--image-size", type=int, required=True, help="the --image-size the copy is for")
    p.add_argument("--out", required=True, help="output folder (a manifest.csv layout)")
    return p


def _png_path(key: str) -> str:
    return str(Path(key).with_suffix(".png"))


def main(args: argparse.Namespace) -> int:
    root, out = Path(args.data), Path(args.out)
    try:
        samples = discover(root)
        images, samples = decode_all(samples, args.image_size)
    except DataError as exc:
        log.error("%s", exc)
        return 2
    rows = []
    for image, s in zip(images, samples):
        key = _png_path(s.key(root))
        (out / key).parent.mkdir(parents=True, exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        gray = bool((array == array[..., :1]).all())
        Image.fromarray(np.ascontiguousarray(array[..., 0] if gray else array)).save(out / key, optimize=True)
        mask = ""
        if s.mask is not None:
            mask = str(Path(s.mask).relative_to(root)) if Path(s.mask).is_relative_to(root) else Path(s.mask).name
            (out / mask).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.mask, out / mask)
        rows.append({"image": key, "mask": mask, "label": CLASSES[s.label], "duplicate_group": s.group or "",
                     "split": s.split or ""})
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "mask", "label", "duplicate_group", "split"])
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %d images at %d² to %s", len(rows), args.image_size, out)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
