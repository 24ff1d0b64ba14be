"""Evaluate a model on a data folder: ``python -m tumortrace.evaluate --model DIR_OR_HUB_ID --data PATH``.

Prints the metrics as JSON (the keys of a model folder's evaluation.json). When the model folder has a
``split.json`` whose test images are in the data, only those are used, so the shipped test metrics can
be reproduced; otherwise every labelled image is used (``--split all`` forces that).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from . import CLASSES
from .cam import predict_batch, peak_in_mask
from .checkpoint import ModelLoadError, atomic_write_text, load
from .data import DataError, Sample, decode_all, discover
from .images import ImageLoadError, load_image
from .metrics import evaluation_report
from .models import TumorClassifier
from .preprocess import normalize
from .split import hash_groups, load_split_keys

log = logging.getLogger("tumortrace.evaluate")


def evaluate_images(model: TumorClassifier, images: torch.Tensor, samples: list[Sample], groups: list[str],
                    root: Path, n_boot: int = 1000, seed: int = 0, batch_size: int = 32) -> dict:
    """Metrics (with CIs) at 0.5 and at the model's threshold, per-image probabilities, CAM-in-mask."""
    model.eval()
    probs, cams = [], []
    has_mask = [s.mask is not None for s in samples]
    for i in range(0, len(samples), batch_size):
        x = normalize(images[i:i + batch_size], model.mean, model.std)
        p, c = predict_batch(model, x, with_cam=any(has_mask[i:i + batch_size]))
        probs.append(p)
        cams += c if c is not None else [None] * len(p)
    p = np.concatenate(probs)
    y = np.array([s.label for s in samples])
    report = evaluation_report(y, p, groups, model.threshold, model.threshold_rule, n_boot, seed,
                               names=[s.key(root) for s in samples])
    report["bootstrap"] = n_boot
    report["cam_peak_in_mask"] = cam_peak_in_mask(samples, cams)
    return report


def write_evaluation(folder: Path, report: dict) -> None:
    """Write a held-out evaluation into a model folder: evaluation.json, ROC and confusion plots, the card."""
    from . import card, plots

    atomic_write_text(folder / "evaluation.json", json.dumps(report, indent=1))
    plots.save(plots.roc_figure(report), folder / "roc.png")
    plots.save(plots.confusion_figure(report), folder / "confusion_matrix.png")
    card.write_card(folder)


def cam_peak_in_mask(samples: list[Sample], cams: list) -> dict:
    out = {}
    for label, cls in enumerate(CLASSES):
        inside = n = 0
        for s, cam in zip(samples, cams):
            if s.label != label or s.mask is None or cam is None:
                continue
            try:
                mask = load_image(s.mask).pixels
            except ImageLoadError as exc:
                log.warning("mask %s unreadable: %s", s.mask, exc.reason)
                continue
            mask = (mask.max(axis=2) if mask.ndim == 3 else mask) > 0.5
            inside += peak_in_mask(cam, mask)
            n += 1
        out[cls] = {"n": n, "inside": inside, "fraction": inside / n if n else None}
    return out


def select_test(samples: list[Sample], root: Path, split_file: Path | None, which: str) -> tuple[list[Sample], str]:
    if which == "all" or split_file is None:
        return samples, "all labelled images"
    part = "val" if which == "val" else "test"
    keys = set(load_split_keys(split_file, part))
    chosen = [s for s in samples if s.key(root) in keys]
    if which in ("test", "val") and not chosen:
        raise DataError(f"none of the {len(keys)} {part} images listed in {split_file} are in {root}")
    if not chosen:
        return samples, "all labelled images (the model's split.json does not match this data)"
    if len(chosen) < len(keys):
        log.warning("%d of %d %s images of split.json are missing from %s", len(keys) - len(chosen), len(keys), part,
                    root)
    return chosen, f"{part} split from {split_file.name} ({len(chosen)} of {len(keys)} images)"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hugging Face Hub repo id")
    p.add_argument("--revision", default=None, help="Hub revision (commit, tag or branch) (default: main)")
    p.add_argument("--data", required=True, help="data folder (manifest.csv, class folders or train/val/test)")
    p.add_argument("--split", choices=("auto", "test", "val", "all"), default="auto",
                   help="which images: the model's saved test or validation split, or all "
                        "(default: auto = test when it matches)")
    p.add_argument("--out", default=None, help="also write the JSON to this file (default: stdout only)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default: 1000)")
    p.add_argument("--per-image", action="store_true", help="include per-image probabilities in stdout (default: off)")
    p.add_argument("--write", action="store_true",
                   help="write evaluation.json, the plots and the model card into the (local) model folder; "
                        "needs the test split (default: off)")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.model, args.revision)
        root = Path(args.data)
        samples = discover(root)
        chosen, what = select_test(samples, root, loaded.file("split.json"), args.split)
        images, chosen = decode_all(chosen, loaded.model.image_size)
    except (ModelLoadError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    groups = [s.group for s in chosen]
    if any(g is None for g in groups):
        groups = hash_groups(images)
    report = evaluate_images(loaded.model, images, chosen, groups, root, n_boot=args.bootstrap)
    report["evaluated_on"] = what
    report["model"] = {"source": loaded.source, "revision": loaded.revision, "sha256": loaded.sha256}
    if args.write:
        if loaded.revision is not None or not Path(args.model).is_dir():
            print("error: --write needs a local model folder, not a Hub repo", file=sys.stderr)
            return 2
        if not what.startswith("test split"):
            print(f"error: --write needs the model's test split, but this evaluated {what}", file=sys.stderr)
            return 2
        write_evaluation(Path(args.model), report)
    text = json.dumps(report, indent=1)
    if args.out:
        atomic_write_text(args.out, text)
    if not args.per_image:
        report.pop("per_image"), report.pop("roc_curve")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(main(get_args_parser().parse_args()))
