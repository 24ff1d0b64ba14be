"""Synthetic 'lesion' slices for tests: benign = smooth round bright blob, malignant = dark spiculated blob.

Learnable in a few epochs at 64×64, with lesion masks, so the whole pipeline runs without real data.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from tumortrace import CLASSES


def lesion(label: int, rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    r = rng.uniform(0.12, 0.2) * size
    angle = np.arctan2(yy - cy, xx - cx)
    if label == 1:
        r = r * (1 + 0.35 * np.sin(7 * angle + rng.uniform(0, 6)))
    mask = np.hypot(yy - cy, xx - cx) < r
    img = rng.normal(0.45, 0.08, (size, size)).astype(np.float32)
    img[mask] = 0.15 if label == 1 else 0.8
    return np.clip(img, 0, 1), mask


def write_class_folders(root: Path, n_per_class: int = 20, size: int = 64, seed: int = 0,
                        class_names=("Benign", "MALIGNANT"), with_masks: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(class_names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img, mask = lesion(label, rng, size)
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{name.lower()} ({i}).png")
            if with_masks:
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name.lower()} ({i})_mask.png")
    return root


def write_manifest_set(root: Path, n_per_class: int = 20, size: int = 64, seed: int = 0) -> Path:
    """BUSI-like: <label>/images, <label>/masks, manifest.csv with duplicate groups (pairs of near-copies)."""
    rng = np.random.default_rng(seed)
    rows = []
    prev_img = prev_mask = None  # i % 4 == 0 sets them before i % 4 == 1 reads them
    for label, name in enumerate(CLASSES):
        (root / name / "images").mkdir(parents=True, exist_ok=True)
        (root / name / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img, mask = lesion(label, rng, size)
            if i % 4 == 1:  # a near-copy of the previous image ("with calipers"), same group
                img = prev_img.copy()
                img[2:4, 2:10] = 1.0
                mask, group = prev_mask, rows[-1]["duplicate_group"]
            else:
                group = f"g{name}{i}"
            prev_img, prev_mask = img, mask
            rel = f"{name}/images/{name} ({i}).png"
            Image.fromarray((img * 255).astype(np.uint8)).save(root / rel)
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / f"{name}/masks/{name} ({i}).png")
            rows.append({"image": rel, "mask": f"{name}/masks/{name} ({i}).png", "label": name,
                         "duplicate_group": group})
    (root / "normal" / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.uniform(0, 1, (size, size)) * 255).astype(np.uint8)).save(root / "normal/images/n.png")
    rows.append({"image": "normal/images/n.png", "mask": "", "label": "normal", "duplicate_group": "gn"})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "mask", "label", "duplicate_group"])
        w.writeheader()
        w.writerows(rows)
    return root


def write_presplit(root: Path, n_per_class: int = 8, size: int = 64, seed: int = 0) -> Path:
    for i, split in enumerate(("train", "Validation", "test")):
        write_class_folders(root / split, n_per_class, size, seed + i, class_names=("benign", "malignant"),
                            with_masks=False)
    return root
