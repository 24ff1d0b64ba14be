"""Where do the models look? Grad-CAM of each model on malignant test images, with the lesion outline.

    python training/cam_figure.py --data ../shared/data/busi --models weights/efficientnet_lite0_busi \
        weights/resnet18_busi --out docs/cam_models.png [--n 6]

One row per model, one column per image: the first N malignant images with a mask in the first model's
test split (split.json), in file order (not picked by result). The white line is the radiologist's
outline; the title says whether the CAM peak lies inside it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumortrace import plots  # noqa: E402
from tumortrace.cam import overlay, peak_in_mask  # noqa: E402
from tumortrace.checkpoint import load  # noqa: E402
from tumortrace.data import discover  # noqa: E402
from tumortrace.images import load_image  # noqa: E402
from tumortrace.inference import display_rgb, predict_image  # noqa: E402
from tumortrace.split import load_split_keys  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data folder with masks (e.g. ../shared/data/busi)")
    p.add_argument("--models", nargs="+", required=True, help="model folders, one row each")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--n", type=int, default=6, help="images (default: 6)")
    return p


def main(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    models = [load(m) for m in args.models]
    root = Path(args.data)
    test = set(load_split_keys(models[0].file("split.json"), "test"))
    chosen = [s for s in discover(root) if s.key(root) in test and s.label == 1 and s.mask is not None][:args.n]
    fig, axes = plt.subplots(len(models), len(chosen), figsize=(2.4 * len(chosen), 2.6 * len(models)), squeeze=False)
    for col, sample in enumerate(chosen):
        image = load_image(sample.path)
        mask = load_image(sample.mask).pixels
        mask = (mask.max(axis=2) if mask.ndim == 3 else mask) > 0.5
        rgb = display_rgb(image, max_side=10_000)
        outline, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for row, loaded in enumerate(models):
            pred = predict_image(loaded, image)
            shown = overlay(rgb, pred.cam)
            cv2.drawContours(shown, outline, -1, (255, 255, 255), max(1, shown.shape[1] // 200))
            ax = axes[row][col]
            ax.imshow(shown)
            ax.set_xticks([]), ax.set_yticks([])
            inside = "in lesion" if peak_in_mask(pred.cam, mask) else "OUTSIDE"
            ax.set_title(f"P(malignant) {pred.p_malignant:.2f}\npeak {inside}", fontsize=8)
            if col == 0:
                ax.set_ylabel(Path(loaded.source).name, fontsize=8)
    fig.suptitle("Grad-CAM for the malignant class on malignant test images (white: lesion outline)", fontsize=9)
    fig.tight_layout()
    plots.save(fig, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
