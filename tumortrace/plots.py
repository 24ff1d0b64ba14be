"""PNG plots of an evaluation and a training history (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import CLASSES, POSITIVE_CLASS  # noqa: E402


def roc_figure(report: dict, title: str = ""):
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    roc = report["roc_curve"]
    m = report["thresholds"]["default_0.5"]
    auc, ci = m["metrics"]["roc_auc"], m["ci95"]["roc_auc"]
    ax.plot(roc["fpr"], roc["tpr"], lw=2, label=f"AUC {auc:.3f} (95% CI {ci[0]:.3f}–{ci[1]:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    v = report["thresholds"]["validated"]
    ax.scatter([1 - v["metrics"]["specificity"]], [v["metrics"]["recall"]], c="red", zorder=3,
               label=f"validated threshold {v['threshold']:.3f}")
    ax.set_xlabel("1 − specificity (benign called malignant)")
    ax.set_ylabel(f"sensitivity (positive class: {POSITIVE_CLASS})")
    ax.set_title(title or f"ROC, test split (n={report['n_images']})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(report: dict, which: str = "validated"):
    cm = report["thresholds"][which]["metrics"]["confusion_matrix"]
    grid = [[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]]
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=100)
    ax.imshow(grid, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(grid[i][j]), ha="center", va="center", fontsize=14,
                    color="white" if grid[i][j] > max(map(max, grid)) / 2 else "black")
    ax.set_xticks([0, 1], [f"pred {c}" for c in CLASSES])
    ax.set_yticks([0, 1], [f"true {c}" for c in CLASSES])
    ax.set_title(f"threshold {report['thresholds'][which]['threshold']:.3f} (positive: {POSITIVE_CLASS})",
                 fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict]):
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.8), dpi=100)
    # Short centred titles leave the top corners blank: Gradio draws the image's label and its buttons there.
    a1.set_title("loss", fontsize=10)
    a2.set_title("accuracy and ROC-AUC", fontsize=10)
    a1.plot(epochs, [h["train_loss"] for h in history], label="train")
    a1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a1.set_xlabel("epoch"), a1.set_ylabel("cross-entropy loss"), a1.legend()
    a2.plot(epochs, [h["train_accuracy"] for h in history], label="train accuracy")
    a2.plot(epochs, [h["val_accuracy"] for h in history], label="validation accuracy")
    a2.plot(epochs, [h["val_auc"] for h in history], label="validation ROC-AUC (malignant)")
    a2.set_xlabel("epoch"), a2.set_ylim(0, 1.02), a2.legend(fontsize=8)
    fig.tight_layout()
    fig.subplots_adjust(top=0.8)
    return fig


def save(fig, path: str | Path) -> None:
    fig.savefig(path)
    plt.close(fig)
