"""The model card (README.md of a model folder): Hub metadata, intended use, data, metrics with CIs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import INTENDED_USE, POSITIVE_CLASS, __version__
from .engine import DEFAULT_LR, learning_rate
from .metrics import calibration, per_image_labels

BUSI_CITATION = ("Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
                 "Data in Brief 28 (2020) 104863. doi:10.1016/j.dib.2019.104863")

LIMITATIONS = {
    "ultrasound": [
        "Trained on breast **ultrasound** (BUSI), not MRI: its output on MRI slices is not validated.",
        "Single site (Baheya Hospital, Cairo, 2018), one population; no external validation.",
        "Many BUSI images carry caliper marks and burned-in text, which a model can learn instead of "
        "the lesion; check the Grad-CAM peak-in-mask figures above.",
        "BUSI has no patient ids: images of one patient may sit on both sides of the split; only exact "
        "and near-duplicate images were kept together (duplicate_group).",
    ],
}
GENERIC_LIMITATIONS = [
    "Classifies the lesion in one 2D slice; it does not detect lesions or use other slices or sequences.",
    "Probabilities are not calibrated risks and do not map to BI-RADS categories.",
]


def _fmt(metric: str, block: dict) -> str:
    v, (lo, hi) = block["metrics"][metric], block["ci95"][metric]
    return f"{v:.3f} ({lo:.3f}–{hi:.3f})"


AUGMENT_ON = {"cpu": "the CPU (loader workers)", "gpu": "the GPU (tumortrace.gpu_augment)",
              "auto": "the GPU if trained with CUDA, else the CPU (--augment-on auto)"}


def _lr(args: dict) -> str:
    if args.get("opt") not in DEFAULT_LR:
        return str(args.get("lr"))
    return f"{learning_rate(args['opt'], args.get('lr')):g} ({args.get('lr_scheduler', 'cosine')} schedule)"


def _trained_on_cuda(summary: dict) -> bool | None:
    """None where the history does not say where it trained (train.py records it since 2026-11-23)."""
    device = summary.get("device")
    return None if not device else "(CUDA)" in device


def _augmentation(args: dict, on_cuda: bool | None) -> str:
    where = args.get("augment_on", "cpu")  # before --augment-on existed, augmentation ran in the loader
    if where == "auto" and on_cuda is not None:  # older histories kept "auto" instead of what it resolved to
        where = "gpu" if on_cuda else "cpu"
    return AUGMENT_ON.get(where, where)


def _hardware(summary: dict, args: dict, on_cuda: bool | None) -> str:
    if on_cuda is None:
        return ""
    # CPU training is always fp32; on CUDA, --amp decides (histories without it: say nothing)
    precision = {"bf16": ", bf16 autocast", "off": ", fp32"}.get(args.get("amp"), "") if on_cuda else ", fp32"
    source = f" (device {summary['device_source']})" if summary.get("device_source") else ""
    return f"; trained on {summary['device']}{precision}{source}"


def training_summary(summary: dict) -> str:
    a = summary.get("args", {})
    on_cuda = _trained_on_cuda(summary)
    return (f"{summary.get('epochs_run')} epochs (best {summary.get('best_epoch')}, early stopping on "
            f"{summary.get('monitor')}, patience {a.get('patience')}); init: {summary.get('init')}; "
            f"{a.get('opt')}, lr {_lr(a)}, weight decay {a.get('weight_decay')}, batch {a.get('batch_size')}, "
            f"balance {a.get('balance')}, label smoothing {a.get('label_smoothing', 0.0)}, "
            f"augmentation on {_augmentation(a, on_cuda)}, seed {a.get('seed')}"
            + _hardware(summary, a, on_cuda) + _divergence(summary))


def _divergence(summary: dict) -> str:
    d = summary.get("diverged")
    return (f"; training diverged at epoch {d['epoch']} ({d['reason']}) and stopped there, with the best earlier "
            "epoch kept" if d else "")


def write_card(folder: str | Path) -> Path:
    """(Re)write README.md of a model folder from its config.json, evaluation.json and history.json."""
    from .checkpoint import atomic_write_text

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    evaluation = json.loads((folder / "evaluation.json").read_text())
    summary = json.loads((folder / "history.json").read_text())["summary"]
    citation = BUSI_CITATION if "BUSI" in config.get("training_data", "") else ""
    atomic_write_text(folder / "README.md", render(config, evaluation, {"text": training_summary(summary)}, citation))
    return folder / "README.md"


def calibration_markdown(evaluation: dict | None) -> str:
    """How P(malignant) compared with the test labels, from the per-image test probabilities of ``evaluation``:
    the Brier score and a table by groups of P(malignant) (the app's Evaluation tab and the model card)."""
    if not evaluation or not evaluation.get("per_image"):
        return "No per-image test probabilities shipped with this model: no calibration to show."
    c = calibration(*per_image_labels(evaluation["per_image"]))
    lines = [f"**Calibration on the held-out test images** (does P(malignant) match how often the lesions were "
             f"malignant? positive class **malignant**): Brier score **{c['brier']:.3f}** (0 is perfect; "
             f"{c['brier_constant']:.3f} for giving every image the split's malignant fraction, "
             f"{c['prevalence']:.0%}).", "",
             "| P(malignant) of the images | images | mean P(malignant) | observed malignant (95% CI) |",
             "|---|---|---|---|"]
    for b in c["bins"]:
        lo, hi = b["observed_ci95"]
        lines.append(f"| {b['p_low']:.3f}–{b['p_high']:.3f} | {b['n']} | {b['mean_p']:.3f} | "
                     f"{b['n_malignant']}/{b['n']} = {b['observed']:.3f} ({lo:.3f}–{hi:.3f}) |")
    lines += ["", f"The test images in {len(c['bins'])} groups of about equal size by P(malignant); Wilson "
              "intervals. With this few images per group the observed fractions are coarse: P(malignant) is a "
              "model output, not a calibrated risk."]
    return "\n".join(lines)


def render(config: dict, evaluation: dict, history_summary: dict, data_citation: str = "") -> str:
    modality = config.get("modality", "unspecified")
    rows = []
    names = [("roc_auc", "ROC-AUC"), ("recall", "sensitivity (recall)"), ("specificity", "specificity"),
             ("precision", "precision (PPV)"), ("npv", "NPV"), ("f1", "F1"), ("accuracy", "accuracy"),
             ("balanced_accuracy", "balanced accuracy")]
    v, d = evaluation["thresholds"]["validated"], evaluation["thresholds"]["default_0.5"]
    for key, label in names:
        rows.append(f"| {label} | {_fmt(key, d)} | {_fmt(key, v)} |")
    cm = v["metrics"]["confusion_matrix"]
    cam = evaluation.get("cam_peak_in_mask") or {}
    cam_lines = [f"- {cls} test images: the malignant-class CAM peaks inside the lesion mask in "
                 f"{c['inside']}/{c['n']} ({c['fraction']:.0%})" for cls, c in cam.items() if c.get("n")]
    limitations = LIMITATIONS.get(modality, []) + GENERIC_LIMITATIONS
    auc = d["metrics"]["roc_auc"]
    front = "\n".join([
        "---", "library_name: tumortrace", "license: apache-2.0", "pipeline_tag: image-classification",
        "tags:", "- medical-imaging", "- breast", f"- {modality}", "- research-only",
        *(["datasets:", "- BUSI"] if "BUSI" in config.get("training_data", "") else []),
        "model-index:", f"- name: tumortrace-{config['arch']}", "  results:",
        "  - task: {type: image-classification}",
        f"    dataset: {{name: {'BUSI' if 'BUSI' in config.get('training_data', '') else 'custom'}, "
        "type: image-classification, split: test}",
        "    metrics:", f"    - {{type: roc_auc, value: {auc:.4f}, name: test ROC-AUC (positive {POSITIVE_CLASS})}}",
        "---",
    ])
    return f"""{front}

# TumorTrace {config['arch']} — breast lesion benign/malignant ({modality})

**Intended use.** {INTENDED_USE} It classifies one image slice containing a breast lesion as benign or
malignant, for research and for reviewing model behaviour. It must not be used for diagnosis.

| item | details |
|---|---|
| model | `{config['arch']}`, input {config['image_size']}×{config['image_size']} |
| modality | **{modality}** |
| training data | {config.get('training_data', 'unspecified')} |
| classes | index 0 `benign`, index 1 `malignant` (positive class) |
| decision threshold | {config['threshold']:.4f} — {config.get('threshold_rule', '')} |
| weights | `model.safetensors` ({config.get('weights_dtype', 'float16')}), sha256 `{config.get('weights_sha256', '')[:16]}…` |
| training | {history_summary.get('text', '')} |
| made with | tumortrace {__version__} |

## Held-out test metrics (positive class: {POSITIVE_CLASS})

Test split: {evaluation['n_images']} images ({evaluation['n_malignant']} malignant, {evaluation['n_benign']} benign,
{evaluation['n_groups']} duplicate groups). 95% CIs from {evaluation.get('bootstrap', 1000)} bootstrap resamples
of whole duplicate groups.

| metric (malignant = positive) | at 0.5 | at validated threshold {v['threshold']:.3f} |
|---|---|---|
{chr(10).join(rows)}

Confusion matrix at the validated threshold: TP {cm['tp']}, FN {cm['fn']}, FP {cm['fp']}, TN {cm['tn']}.

## Where the model looks (Grad-CAM peak vs. radiologist's lesion mask, test split)
{chr(10).join(cam_lines) or 'No lesion masks in the test data.'}

## Calibration of P(malignant) (test split)
{calibration_markdown(evaluation)}

## Limitations
{chr(10).join('- ' + x for x in limitations)}

## Data
{data_citation or config.get('training_data', '')}
"""


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(write_card(arg))
