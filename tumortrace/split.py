"""Stratified train/val/test splits that never separate a group of (near-)duplicate images."""
from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from . import CLASSES
from .data import DataError, Sample

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
HASH_MAX_DISTANCE = 6  # of 64 bits: same scan with/without calipers or re-encoded


def dhash(image_uint8: torch.Tensor) -> int:
    """64-bit difference hash of a 3×S×S uint8 image (gray, 9×8, horizontal gradients)."""
    import torch.nn.functional as F

    gray = image_uint8.float().mean(dim=0, keepdim=True)[None]
    small = F.interpolate(gray, size=(8, 9), mode="area")[0, 0]
    bits = (small[:, 1:] > small[:, :-1]).flatten().tolist()
    return sum(1 << i for i, b in enumerate(bits) if b)


def hash_groups(images: torch.Tensor, max_distance: int = HASH_MAX_DISTANCE) -> list[str]:
    """Connected components of images whose dHashes differ in at most ``max_distance`` bits."""
    hashes = np.array([dhash(im) for im in images], dtype=np.uint64)
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        x = np.bitwise_xor(hashes[i + 1:], hashes[i])
        dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        for j in np.nonzero(dist <= max_distance)[0]:
            parent[find(i + 1 + int(j))] = find(i)
    return [f"h{find(i)}" for i in range(n)]


def assign_splits(samples: list[Sample], fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, list[int]]:
    """Indices of samples per split, stratified by class, whole groups at a time.

    Samples that already carry a split (manifest column or pre-split folders) keep it.
    """
    if all(s.split for s in samples):
        out = {name: [i for i, s in enumerate(samples) if s.split == name] for name in SPLITS}
        _check_groups_not_separated(samples, out)
    else:
        out = _stratified_group_split(samples, fractions, seed)
    _check_each_split_has_both_classes(samples, out)
    return out


def kfold_split(samples: list[Sample], folds: int, fold: int, seed: int = 0) -> dict[str, list[int]]:
    """Fold ``fold`` (0-based) of a class-stratified K-fold over whole groups.

    test = that fold, val = the next one (cyclically), train = the rest; over the K folds every image is
    in test exactly once, so pooled test predictions cover the whole data set.
    """
    if folds < 3 or not 0 <= fold < folds:
        raise DataError(f"--fold must be in 0..{folds - 1} and --folds at least 3 (got fold {fold} of {folds})")
    groups, by_class = _groups_by_class(samples)
    rng = random.Random(seed)
    bins: list[list[int]] = [[] for _ in range(folds)]
    for label in sorted(by_class):
        names = sorted(by_class[label])
        rng.shuffle(names)
        filled = [0] * folds
        for g in sorted(names, key=lambda g: -len(groups[g])):  # big groups first, then fill the gaps
            dest = min(range(folds), key=lambda b: (filled[b], b))
            filled[dest] += len(groups[g])
            bins[dest] += groups[g]
    out = {"test": sorted(bins[fold]), "val": sorted(bins[(fold + 1) % folds]),
           "train": sorted(i for b in range(folds) if b not in (fold, (fold + 1) % folds) for i in bins[b])}
    _check_each_split_has_both_classes(samples, out)
    return out


def _groups_by_class(samples) -> tuple[dict[str, list[int]], dict[int, list[str]]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s.group or f"single:{i}"].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for g, members in groups.items():
        labels = {samples[i].label for i in members}
        if len(labels) > 1:
            raise DataError(f"duplicate group {g} mixes benign and malignant images "
                            f"({', '.join(samples[i].path.name for i in members[:4])}); fix the labels")
        by_class[labels.pop()].append(g)
    return groups, by_class


def _stratified_group_split(samples, fractions, seed) -> dict[str, list[int]]:
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise DataError(f"split fractions must be positive and sum to 1, got {fractions}")
    groups, by_class = _groups_by_class(samples)
    rng = random.Random(seed)
    out = {name: [] for name in SPLITS}
    for label in sorted(by_class):
        names = sorted(by_class[label])
        rng.shuffle(names)
        total = sum(len(groups[g]) for g in names)
        # Fill val and test to their share first (they are small and most sensitive), the rest is train.
        targets = {"val": fractions[1] * total, "test": fractions[2] * total}
        filled = {"val": 0, "test": 0}
        for g in names:
            size = len(groups[g])
            pending = [k for k in ("test", "val") if filled[k] + size / 2 <= targets[k]]
            dest = pending[0] if pending else "train"
            if dest != "train":
                filled[dest] += size
            out[dest] += groups[g]
    return {k: sorted(v) for k, v in out.items()}


def _check_groups_not_separated(samples, out) -> None:
    seen: dict[str, str] = {}
    for name, idx in out.items():
        for i in idx:
            g = samples[i].group
            if g and seen.setdefault(g, name) != name:
                raise DataError(f"duplicate group {g} appears in both {seen[g]} and {name} "
                                f"(e.g. {samples[i].path.name}): the given split leaks")


def _check_each_split_has_both_classes(samples, out) -> None:
    for name in SPLITS:
        for label, cls in enumerate(CLASSES):
            if not any(samples[i].label == label for i in out[name]):
                total = sum(s.label == label for s in samples)
                raise DataError(f"the {name} split has no {cls} images ({total} {cls} images in all): "
                                "the data set is too small for this split; add images or change the fractions")


def save_split(path: Path, root: Path, samples: list[Sample], split: dict[str, list[int]], meta: dict) -> None:
    from .checkpoint import atomic_write_text

    doc = dict(meta, data_root=str(root), positive_class=CLASSES[1])
    for name in SPLITS:
        doc[name] = [{"image": samples[i].key(root), "label": CLASSES[samples[i].label],
                      "group": samples[i].group} for i in split[name]]
    atomic_write_text(path, json.dumps(doc, indent=1))


def load_split_keys(path: Path, name: str = "test") -> list[str]:
    return [row["image"] for row in json.loads(Path(path).read_text())[name]]
