"""Predict: ``python -m tumortrace.predict --model DIR_OR_HUB_ID FILE...`` prints one CSV row per file.

Columns: file, frame, p_benign, p_malignant, decision (at the model's validated threshold), threshold, error.
A file (or frame) that cannot be read gets a row with the error and the exit code is 1; the others are still
predicted. ``--frame all`` gives one row per frame of a multi-frame DICOM or multi-page TIFF.
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys

from . import openmp

# Before the imports below load torch, and libgomp with it, which reads the spin then only (tumortrace.openmp):
# each file's CAM and map run right after its forward, on the threads the forward's workers spin beside.
_OPENMP_SPIN = openmp.shorten_spin()

from .checkpoint import ModelLoadError, load  # noqa: E402
from .images import ImageLoadError, load_frames, load_image  # noqa: E402
from .inference import predict_image  # noqa: E402
from .malloc import tune_for_serving  # noqa: E402

COLUMNS = ("file", "frame", "p_benign", "p_malignant", "decision", "threshold", "error")


def frame_choice(text: str) -> int | str:
    if text == "all":
        return text
    try:
        frame = int(text)
    except ValueError:
        frame = 0
    if frame < 1:
        raise argparse.ArgumentTypeError(f"must be a frame number from 1, or all (got {text!r})")
    return frame


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hugging Face Hub repo id")
    p.add_argument("--revision", default=None, help="Hub revision (default: main)")
    p.add_argument("--frame", type=frame_choice, default=1,
                   help="frame of a multi-frame DICOM or multi-page TIFF, from 1, or all (default: 1)")
    p.add_argument("files", nargs="+", help="image files (PNG, JPEG, TIFF, BMP, DICOM)")
    return p


def main(args: argparse.Namespace) -> int:
    tune_for_serving()  # a series of frames is many predictions
    try:
        loaded = load(args.model, args.revision, for_inference=True)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    writer = csv.writer(sys.stdout)
    writer.writerow(COLUMNS)
    failed, every_frame = 0, args.frame == "all"
    for f in args.files:
        frame = 1 if every_frame else args.frame
        try:
            for image in (load_frames(f) if every_frame else [load_image(f, frame=frame)]):
                pred = predict_image(loaded, image)
                writer.writerow([f, frame, f"{pred.probabilities['benign']:.6f}", f"{pred.p_malignant:.6f}",
                                 pred.decision, f"{pred.threshold:.6f}", ""])
                frame += 1
        except ImageLoadError as exc:  # the rows of the frames before it stay
            failed += 1
            print(f"error: {f}: {exc.reason}", file=sys.stderr)
            writer.writerow([f, frame, "", "", "", "", exc.reason])
    return 1 if failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(main(get_args_parser().parse_args()))
