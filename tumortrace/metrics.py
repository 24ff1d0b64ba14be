"""Binary metrics with malignant (label 1) as the positive class, from scikit-learn, with bootstrap CIs, and the
calibration of P(malignant)."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, brier_score_loss, confusion_matrix, f1_score,
                             precision_score, recall_score, roc_auc_score, roc_curve)

from . import CLASSES, POSITIVE_CLASS

METRIC_NAMES = ("accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy", "roc_auc",
                "npv")


def binary_metrics(y_true, p_malignant, threshold: float = 0.5) -> dict:
    """Metrics at ``threshold`` (predict malignant when p >= threshold). recall = sensitivity; precision = PPV."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p_malignant, dtype=float)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    # Undefined metrics are NaN (zero_division, and the guards of the one-class case), never a warning: this
    # runs on the app's handler threads, where warnings.catch_warnings (not thread-safe) is not used.
    out = {
        "accuracy": accuracy_score(y, pred),
        "precision": precision_score(y, pred, pos_label=1, zero_division=np.nan),
        "recall": recall_score(y, pred, pos_label=1, zero_division=np.nan),
        "specificity": recall_score(y, pred, pos_label=0, zero_division=np.nan),
        "f1": f1_score(y, pred, pos_label=1, zero_division=np.nan),
        "balanced_accuracy": balanced_accuracy_score(y, pred) if len(set(y)) > 1 else math.nan,
        "roc_auc": roc_auc_score(y, p) if len(set(y)) > 1 else math.nan,
        "npv": tn / (tn + fn) if tn + fn else math.nan,
    }
    out = {k: float(v) for k, v in out.items()}
    out["confusion_matrix"] = {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}
    return out


def bootstrap_ci(y_true, p_malignant, threshold: float, groups=None, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict:
    """Percentile CIs, resampling whole groups (near-duplicates of one lesion) with replacement."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p_malignant, dtype=float)
    groups = np.asarray(groups if groups is not None else np.arange(len(y)), dtype=object)
    uniq, inverse = np.unique(groups.astype(str), return_inverse=True)
    members = [np.nonzero(inverse == g)[0] for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in METRIC_NAMES}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        if len(set(y[idx])) < 2:
            continue
        m = binary_metrics(y[idx], p[idx], threshold)
        for k in METRIC_NAMES:
            draws[k].append(m[k])
    out = {}
    for k, vals in draws.items():
        vals = np.asarray(vals, dtype=float)
        vals = vals[~np.isnan(vals)]
        out[k] = ([float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))]
                  if len(vals) else [math.nan, math.nan])
    return out


def threshold_for_sensitivity(y_true, p_malignant, target: float = 0.90) -> float:
    """The highest threshold whose sensitivity on (validation) data reaches ``target``."""
    y = np.asarray(y_true, dtype=int)
    fpr, tpr, thr = roc_curve(y, np.asarray(p_malignant, dtype=float), pos_label=1, drop_intermediate=False)
    ok = np.nonzero(tpr >= target)[0]
    t = float(thr[ok[0]]) if len(ok) else 0.0
    return min(t, 1.0)


def calibration(y_true, p_malignant, n_bins: int = 5) -> dict:
    """How P(malignant) compares with what was observed.

    ``brier``: scikit-learn's Brier score, the mean squared difference between P(malignant) and the label
    (0 is perfect); ``brier_constant``: the Brier score of giving every image the split's malignant fraction
    (``prevalence``), which knows nothing of the images. ``bins``: the images in ``n_bins`` groups of about
    equal size by P(malignant) (scikit-learn's ``calibration_curve``, strategy "quantile"; groups without
    images are left out, as it leaves them), each with the range of P(malignant) in it, its images, its
    malignant ones, the mean P(malignant) and the fraction malignant with a 95% Wilson interval (scipy).
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p_malignant, dtype=float)
    if len(y) == 0:
        raise ValueError("calibration needs at least one image")
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="quantile", pos_label=1)
    # calibration_curve gives neither the counts nor the ranges: its bins, drawn the way it draws them
    edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    ids = np.searchsorted(edges[1:-1], p)
    bins = []
    for i, b in enumerate(np.unique(ids)):
        members = ids == b
        n, k = int(members.sum()), int(y[members].sum())
        if not math.isclose(float(predicted[i]), float(p[members].mean()), abs_tol=1e-9):
            raise RuntimeError("scikit-learn's calibration_curve no longer draws its quantile bins as "
                               "tumortrace.metrics.calibration expects")
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        bins.append({"p_low": float(p[members].min()), "p_high": float(p[members].max()), "n": n,
                     "n_malignant": k, "mean_p": float(predicted[i]), "observed": float(observed[i]),
                     "observed_ci95": [float(ci.low), float(ci.high)]})
    prevalence = float(y.mean())
    return {"brier": float(brier_score_loss(y, p, pos_label=1)), "brier_constant": prevalence * (1 - prevalence),
            "prevalence": prevalence, "bins": bins}


def per_image_labels(per_image: list[dict]) -> tuple[list[int], list[float]]:
    """Labels (1 = malignant) and P(malignant) of an evaluation's ``per_image`` records, refusing any that
    evaluation_report would not have written."""
    y, p = [], []
    for record in per_image:
        label, prob = record["label"], record["p_malignant"]
        if label not in CLASSES:
            raise ValueError(f"a test image's label is {label!r}, not one of {', '.join(CLASSES)}")
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
            raise ValueError(f"a test image's p_malignant is {prob!r}, not a probability from 0 to 1")
        y.append(CLASSES.index(label))
        p.append(float(prob))
    return y, p


def evaluation_report(y_true, p_malignant, groups, threshold: float, threshold_rule: str,
                      n_boot: int = 1000, seed: int = 0, names=None) -> dict:
    """The content of evaluation.json: metrics with CIs at 0.5 and at the validated threshold."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p_malignant, dtype=float)
    report = {
        "positive_class": POSITIVE_CLASS,
        "classes": list(CLASSES),
        "n_images": int(len(y)),
        "n_malignant": int(y.sum()),
        "n_benign": int((1 - y).sum()),
        "n_groups": int(len(set(map(str, groups)))) if groups is not None else int(len(y)),
        "thresholds": {},
    }
    for name, t in (("default_0.5", 0.5), ("validated", threshold)):
        m = binary_metrics(y, p, t)
        report["thresholds"][name] = {"threshold": float(t), "metrics": m,
                                      "ci95": bootstrap_ci(y, p, t, groups, n_boot, seed)}
    report["thresholds"]["validated"]["rule"] = threshold_rule
    fpr, tpr, thr = roc_curve(y, p, pos_label=1) if len(set(y)) > 1 else ([], [], [])
    report["roc_curve"] = {"fpr": list(map(float, fpr)), "tpr": list(map(float, tpr)),
                           "thresholds": [float(min(t, 1.0)) for t in thr]}
    report["calibration"] = calibration(y, p) if len(y) else None
    report["per_image"] = [
        {"image": n, "label": CLASSES[int(t)], "p_malignant": float(q), "group": None if g is None else str(g)}
        for n, t, q, g in zip(names if names is not None else range(len(y)), y, p,
                              groups if groups is not None else [None] * len(y))
    ]
    return report
