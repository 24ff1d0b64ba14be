"""Does a model look at caliper marks and burned-in text? Compare it on each slice as-is and with the marks
painted out (tumortrace/marks.py).

    python training/caliper_check.py --model weights/NAME --data ../shared/data/busi [--split val|test|all]

Reports, per class: how many slices carry marks; where the Grad-CAM peak lies (on a mark, in the lesion
mask); and for the model: ROC-AUC (positive class malignant) and decisions at its validated threshold,
as-is vs painted out, plus how far P(malignant) moves. The default is the validation split, so that the
test split stays untouched for the final evaluation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumortrace import CLASSES, POSITIVE_CLASS  # noqa: E402
from tumortrace.cam import predict_batch  # noqa: E402
from tumortrace.checkpoint import ModelLoadError, load  # noqa: E402
from tumortrace.data import DataError, discover  # noqa: E402
from tumortrace.evaluate import select_test  # noqa: E402
from tumortrace.images import ImageLoadError, load_image  # noqa: E402
from tumortrace.marks import inpaint_marks  # noqa: E402
from tumortrace.preprocess import normalize, resized_uint8  # noqa: E402

NEAR_MARK = 0.04  # a CAM peak within this fraction of the slice's longer side of a mark counts as on it
MIN_MARK_PIXELS = 30  # fewer detected pixels than this: a stray speck, not a marked slice
# Nearly every BUSI slice has detections: a small logo in a corner and bright tissue specks count too.


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hub repo id")
    p.add_argument("--data", required=True, help="labelled data folder (BUSI layout: masks give the lesion)")
    p.add_argument("--split", choices=("val", "test", "all"), default="val",
                   help="which of the model's split.json parts to use (default: val)")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON (default: no)")
    return p


def _peak(cam: np.ndarray, shape: tuple[int, int]) -> tuple[int, int]:
    resized = cv2.resize(cam.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(int(np.argmax(resized)), resized.shape)
    return int(y), int(x)


def check(loaded, samples) -> list[dict]:
    model = loaded.model.eval()
    rows = []
    for s in samples:
        try:
            pixels = load_image(s.path).pixels
            lesion = load_image(s.mask).pixels if s.mask else None
        except ImageLoadError as exc:
            print(f"skipping {s.path.name}: {exc.reason}", file=sys.stderr)
            continue
        painted, marks = inpaint_marks(pixels)
        x = torch.stack([resized_uint8(pixels, model.image_size), resized_uint8(painted, model.image_size)])
        p, cams = predict_batch(model, normalize(x, model.mean, model.std), with_cam=True)
        radius = max(1, int(NEAR_MARK * max(marks.shape)))
        near = cv2.dilate(marks.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
        row = {"image": s.path.name, "label": CLASSES[s.label], "mark_pixels": int(marks.sum()),
               "p_as_is": float(p[0]), "p_painted": float(p[1])}
        for tag, cam in (("as_is", cams[0]), ("painted", cams[1])):
            y, xx = _peak(cam, marks.shape)
            row[f"peak_on_mark_{tag}"] = bool(near[y, xx])
            if lesion is not None:
                lesion_mask = (lesion.max(axis=2) if lesion.ndim == 3 else lesion) > 0.5
                row[f"peak_in_lesion_{tag}"] = bool(lesion_mask[y, xx])
        rows.append(row)
    return rows


def summarize(rows: list[dict], threshold: float) -> dict:
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    out = {"n": len(rows), "threshold": threshold}
    for tag in ("as_is", "painted"):
        p = np.array([r[f"p_{tag}"] for r in rows])
        out[f"roc_auc_{tag}"] = float(roc_auc_score(y, p)) if len(set(y)) == 2 else None
        out[f"sensitivity_{tag}"] = float((p[y == 1] >= threshold).mean()) if (y == 1).any() else None
        out[f"specificity_{tag}"] = float((p[y == 0] < threshold).mean()) if (y == 0).any() else None
    dp = np.array([r["p_painted"] - r["p_as_is"] for r in rows])
    out["flipped_decisions"] = int(sum((r["p_as_is"] >= threshold) != (r["p_painted"] >= threshold) for r in rows))
    for cls in CLASSES:
        sub = [r for r in rows if r["label"] == cls]
        marked = [r for r in sub if r["mark_pixels"] >= MIN_MARK_PIXELS]
        c = {"n": len(sub), "with_marks": len(marked),
             "mean_change_p_malignant_marked": float(np.mean([r["p_painted"] - r["p_as_is"] for r in marked]))
             if marked else None}
        for tag in ("as_is", "painted"):
            c[f"peak_on_mark_{tag}"] = sum(r[f"peak_on_mark_{tag}"] for r in marked)
            with_lesion = [r for r in sub if f"peak_in_lesion_{tag}" in r]
            c[f"peak_in_lesion_{tag}"] = sum(r[f"peak_in_lesion_{tag}"] for r in with_lesion)
            c["with_lesion_mask"] = len(with_lesion)
        out[cls] = c
    out["mean_abs_change_p_malignant"] = float(np.abs(dp).mean())
    out["max_abs_change_p_malignant"] = float(np.abs(dp).max())
    return out


def report_lines(s: dict, name: str, what: str) -> list[str]:
    lines = [f"# {name} on {what}: {s['n']} slices; positive class {POSITIVE_CLASS}; "
             f"threshold {s['threshold']:.3f}",
             "| | as-is | marks painted out |", "|---|---|---|",
             f"| ROC-AUC | {s['roc_auc_as_is']:.3f} | {s['roc_auc_painted']:.3f} |",
             f"| sensitivity at threshold | {s['sensitivity_as_is']:.3f} | {s['sensitivity_painted']:.3f} |",
             f"| specificity at threshold | {s['specificity_as_is']:.3f} | {s['specificity_painted']:.3f} |"]
    for cls in CLASSES:
        c = s[cls]
        lines.append(f"| {cls}: CAM peak on a detected mark (of {c['with_marks']} with detections) | {c['peak_on_mark_as_is']} | "
                     f"{c['peak_on_mark_painted']} |")
        lines.append(f"| {cls}: CAM peak in lesion (of {c['with_lesion_mask']}) | {c['peak_in_lesion_as_is']} | "
                     f"{c['peak_in_lesion_painted']} |")
    lines.append(f"slices with detections (≥ {MIN_MARK_PIXELS} px): " + ", ".join(f"{cls} {s[cls]['with_marks']}/{s[cls]['n']}" for cls in CLASSES))
    lines.append("mean change of P(malignant) on those slices when painted out: " + ", ".join(
        f"{cls} {s[cls]['mean_change_p_malignant_marked']:+.3f}" for cls in CLASSES
        if s[cls]["mean_change_p_malignant_marked"] is not None))
    lines.append(f"|ΔP(malignant)| mean {s['mean_abs_change_p_malignant']:.3f}, max "
                 f"{s['max_abs_change_p_malignant']:.3f}; decisions flipped: {s['flipped_decisions']}")
    return lines


def main(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.model)
        root = Path(args.data)
        samples, what = select_test(discover(root), root, loaded.file("split.json"), args.split)
    except (ModelLoadError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = check(loaded, samples)
    if not rows:
        print("error: no readable slices", file=sys.stderr)
        return 2
    summary = summarize(rows, loaded.model.threshold)
    print("\n".join(report_lines(summary, Path(args.model).name, what)))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "per_image": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
