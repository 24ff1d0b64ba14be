"""Finding labelled slices on disk and holding them decoded in memory.

Three layouts are accepted (see :func:`discover`):
(a) ``ROOT/manifest.csv`` with columns image,label[,mask][,split][,duplicate_group];
(b) ``ROOT/<class>/**`` folders;
(c) pre-split ``ROOT/{train,val|validation,test}/<class>/**``.
"""
from __future__ import annotations

import csv
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from . import CLASSES
from .images import IMAGE_SUFFIXES, ImageLoadError, load_image
from .preprocess import resized_uint8

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class DataError(ValueError):
    """The data folder cannot be used as it is; the message says what is wrong and where."""


@dataclass
class Sample:
    path: Path
    label: int  # 0 benign, 1 malignant
    mask: Path | None = None
    group: str | None = None
    split: str | None = None

    def key(self, root: Path) -> str:
        """The path relative to the data root, as stored in split.json."""
        try:
            return self.path.relative_to(root).as_posix()
        except ValueError:
            return self.path.as_posix()


def class_index(name: str) -> int | None:
    name = name.strip().lower()
    return CLASSES.index(name) if name in CLASSES else None


def discover(root: str | Path) -> list[Sample]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    if (root / "manifest.csv").is_file():
        samples = _from_manifest(root)
        layout = "manifest.csv"
    else:
        splits = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_ALIASES}
        if "train" in splits and "test" in splits:
            samples = []
            for name, folder in sorted(splits.items()):
                samples += _from_class_folders(folder, split=SPLIT_ALIASES[name])
            layout = "pre-split folders"
        else:
            samples = _from_class_folders(root)
            layout = "class folders"
    _check_classes(samples, root)
    counts = {c: sum(s.label == i for s in samples) for i, c in enumerate(CLASSES)}
    log.info("found %d images in %s (%s): %s", len(samples), root, layout, counts)
    return samples


def _check_classes(samples: list[Sample], root: Path) -> None:
    if not samples:
        raise DataError(f"no labelled images found in {root}: expected a manifest.csv, folders named "
                        f"{' and '.join(CLASSES)}, or train/val/test folders containing them")
    present = {s.label for s in samples}
    missing = [CLASSES[i] for i in range(len(CLASSES)) if i not in present]
    if missing:
        raise DataError(f"no {', '.join(missing)} images in {root}: training and evaluation need both "
                        f"{' and '.join(CLASSES)} (only {CLASSES[present.pop()]} found)")


def _from_manifest(root: Path) -> list[Sample]:
    path = root / "manifest.csv"
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower() for c in reader.fieldnames or []}
        if not {"image", "label"} <= columns:
            raise DataError(f"{path} needs columns image and label (found: {', '.join(sorted(columns)) or 'none'})")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    samples, ignored = [], {}
    for n, row in enumerate(rows, start=2):
        label = class_index(row["label"])
        if label is None:
            ignored[row["label"]] = ignored.get(row["label"], 0) + 1
            continue
        image = root / row["image"]
        if not image.is_file():
            log.warning("%s line %d: image %s not found; skipped", path.name, n, row["image"])
            continue
        split = row.get("split") or None
        if split is not None:
            if split.lower() not in SPLIT_ALIASES:
                raise DataError(f"{path} line {n}: unknown split {split!r} (use train, val or test)")
            split = SPLIT_ALIASES[split.lower()]
        mask = root / row["mask"] if row.get("mask") else None
        samples.append(Sample(image, label, mask if mask and mask.is_file() else None,
                              row.get("duplicate_group") or None, split))
    for name, count in ignored.items():
        log.info("ignoring %d manifest rows labelled %r (not %s)", count, name, "/".join(CLASSES))
    return samples


def _is_mask(path: Path) -> bool:
    return "_mask" in path.stem.lower() or any(p.lower() == "masks" for p in path.parent.parts[-1:])


def _from_class_folders(root: Path, split: str | None = None) -> list[Sample]:
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = class_index(folder.name)
        if label is None:
            log.info("ignoring folder %s (not %s)", folder, "/".join(CLASSES))
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        images = [p for p in files if not _is_mask(p)]
        if not images:
            raise DataError(f"class folder {folder} contains no images")
        masks = {p.stem.lower(): p for p in files if _is_mask(p)}
        for image in images:
            # Kaggle BUSI: "x_mask.png" beside "x.png"; shared layout: masks/x.png beside images/x.png
            mask = masks.get(f"{image.stem.lower()}_mask")
            if mask is None and (image.parent.parent / "masks" / image.name).is_file():
                mask = image.parent.parent / "masks" / image.name
            samples.append(Sample(image, label, mask, None, split))
    return samples


def decode_all(samples: list[Sample], image_size: int, workers: int = 2) -> tuple[torch.Tensor, list[Sample]]:
    """Decode and resize every image once (uint8 N×3×S×S). Unreadable files are logged and dropped; files
    of several frames (a multi-frame DICOM, a multi-page TIFF) give their first and are logged: one label
    belongs to one slice."""
    series = []

    def one(sample: Sample):
        try:
            image = load_image(sample.path)
        except ImageLoadError as exc:
            log.warning("skipping unreadable image %s: %s", sample.path, exc.reason)
            return None
        if image.frames > 1:
            series.append((sample.path, image.frames))
        return resized_uint8(image.pixels, image_size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(one, samples))
    if series:
        path, frames = min(series)
        log.warning("%d image file(s) hold several frames, of which only the first is used (e.g. %s: %d frames); "
                    "give each slice its own file to train on it with its own label", len(series), path, frames)
    kept = [(t, s) for t, s in zip(decoded, samples) if t is not None]
    if not kept:
        raise DataError("none of the images could be read")
    tensors, good = zip(*kept)
    return torch.stack(tensors), list(good)


class SliceDataset(Dataset):
    """Decoded slices held in memory; ``transform`` maps uint8 3×S×S to the model's float input."""

    def __init__(self, images: torch.Tensor, labels: list[int], transform):
        self.images, self.labels, self.transform = images, torch.as_tensor(labels), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]
