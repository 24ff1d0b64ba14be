"""Predict: ``python -m tumortrace.predict --model DIR_OR_HUB_ID FILE...`` prints one CSV row per file.

Columns: file, p_benign, p_malignant, decision (at the model's validated threshold), threshold, error.
A file that cannot be read gets a row with the error and the exit code is 1; the others are still predicted.
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys

from .checkpoint import ModelLoadError, load
from .images import ImageLoadError
from .inference import predict_file

COLUMNS = ("file", "p_benign", "p_malignant", "decision", "threshold", "error")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hugging Face Hub repo id")
    p.add_argument("--revision", default=None, help="Hub revision (default: main)")
    p.add_argument("files", nargs="+", help="image files (PNG, JPEG, TIFF, BMP, DICOM)")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.model, args.revision, for_inference=True)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    writer = csv.writer(sys.stdout)
    writer.writerow(COLUMNS)
    failed = 0
    for f in args.files:
        try:
            pred = predict_file(loaded, f)
        except ImageLoadError as exc:
            failed += 1
            print(f"error: {f}: {exc.reason}", file=sys.stderr)
            writer.writerow([f, "", "", "", "", exc.reason])
            continue
        writer.writerow([f, f"{pred.probabilities['benign']:.6f}", f"{pred.p_malignant:.6f}", pred.decision,
                         f"{pred.threshold:.6f}", ""])
    return 1 if failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(main(get_args_parser().parse_args()))
