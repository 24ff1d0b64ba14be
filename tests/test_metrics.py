import math
import warnings

import numpy as np
import pytest

from tumortrace.metrics import binary_metrics, bootstrap_ci, calibration, evaluation_report, threshold_for_sensitivity


def test_hand_computed_confusion_matrix():
    # labels: 4 malignant, 6 benign. At 0.5: TP 3 (0.9, 0.8, 0.6), FN 1 (0.4), FP 2 (0.7, 0.55), TN 4.
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.6, 0.4, 0.7, 0.55, 0.3, 0.2, 0.1, 0.05]
    m = binary_metrics(y, p, 0.5)
    assert m["confusion_matrix"] == {"tp": 3, "fn": 1, "fp": 2, "tn": 4}
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["npv"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    # AUC by hand: pairs (malignant, benign) ranked correctly: 0.9>all 6, 0.8>all 6, 0.6>4 (not 0.7, 0.55 ->
    # 0.6>0.55 yes) = 5, 0.4 > 0.3, 0.2, 0.1, 0.05 = 4 => 21/24
    assert m["roc_auc"] == pytest.approx(21 / 24)


def test_threshold_is_inclusive_and_malignant_is_positive():
    m = binary_metrics([1, 0], [0.5, 0.49], 0.5)
    assert m["confusion_matrix"] == {"tp": 1, "fn": 0, "fp": 0, "tn": 1}
    m = binary_metrics([1, 0], [0.2, 0.9], 0.5)  # everything wrong
    assert m["recall"] == 0 and m["specificity"] == 0


def test_undefined_metrics_are_nan_not_errors():
    """Nor warnings, and without a filter ignoring them: on the app's handler threads, a blanket "ignore" set
    inside warnings.catch_warnings (not thread-safe) could be left in place for the whole process."""
    blanket = []
    simplefilter = warnings.simplefilter

    def recording(action, category=Warning, *args, **kwargs):
        if action == "ignore" and category is Warning:
            blanket.append(action)
        simplefilter(action, category, *args, **kwargs)
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("error")
        patch.setattr(warnings, "simplefilter", recording)
        m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
        assert math.isnan(m["roc_auc"]) and math.isnan(m["recall"]) and m["specificity"] == 1
        m = binary_metrics([1, 1], [0.1, 0.2], 0.5)  # nothing called malignant, and no benign case
        assert math.isnan(m["precision"]) and math.isnan(m["specificity"]) and math.isnan(m["balanced_accuracy"])
        assert m["f1"] == 0 and m["npv"] == 0 and m["recall"] == 0
        ci = bootstrap_ci([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.2], 0.5, n_boot=50)
        assert all(len(v) == 2 for v in ci.values())
    assert not blanket


def test_threshold_for_sensitivity_reaches_target_on_validation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    t = threshold_for_sensitivity(y, p, 0.9)
    assert binary_metrics(y, p, t)["recall"] >= 0.9
    # and it is the highest such threshold: a hair above, sensitivity drops below target
    assert binary_metrics(y, p, t + 1e-9)["recall"] < 0.9


def test_bootstrap_ci_brackets_estimate_and_resamples_groups():
    rng = np.random.default_rng(1)
    y = np.repeat(rng.integers(0, 2, 60), 2)  # 60 groups of 2 identical copies
    p = np.clip(y * 0.4 + rng.uniform(0, 0.6, 120), 0, 1)
    groups = np.repeat(np.arange(60), 2)
    ci = bootstrap_ci(y, p, 0.5, groups, n_boot=300)
    est = binary_metrics(y, p, 0.5)
    for k in ("roc_auc", "recall", "specificity"):
        assert ci[k][0] <= est[k] <= ci[k][1]
    # treating copies as independent understates uncertainty: group CI is wider
    naive = bootstrap_ci(y, p, 0.5, None, n_boot=300)
    assert (ci["roc_auc"][1] - ci["roc_auc"][0]) > (naive["roc_auc"][1] - naive["roc_auc"][0])


def test_evaluation_report_keys():
    r = evaluation_report([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.6], ["a", "b", "c", "d"], 0.3, "rule", n_boot=20)
    assert r["positive_class"] == "malignant"
    assert set(r["thresholds"]) == {"default_0.5", "validated"}
    assert r["thresholds"]["validated"]["threshold"] == 0.3
    assert len(r["per_image"]) == 4 and r["per_image"][0]["label"] == "malignant"
    assert r["calibration"] == calibration([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.6])


def test_hand_computed_calibration():
    # The confusion-matrix case above. Brier: malignant (0.1² + 0.2² + 0.4² + 0.6²) = 0.57, benign (0.7² + 0.55² +
    # 0.3² + 0.2² + 0.1² + 0.05²) = 0.935; (0.57 + 0.935) / 10. A constant 0.4 (4 malignant of 10): 0.4 · 0.6.
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.6, 0.4, 0.7, 0.55, 0.3, 0.2, 0.1, 0.05]
    c = calibration(y, p, n_bins=5)
    assert c["brier"] == pytest.approx(0.1505) and c["brier_constant"] == pytest.approx(0.24)
    assert c["prevalence"] == pytest.approx(0.4)
    # Five groups of two by P(malignant): (0.05 b, 0.1 b), (0.2 b, 0.3 b), (0.4 m, 0.55 b), (0.6 m, 0.7 b),
    # (0.8 m, 0.9 m).
    got = [(b["p_low"], b["p_high"], b["n"], b["n_malignant"]) for b in c["bins"]]
    assert got == [(0.05, 0.1, 2, 0), (0.2, 0.3, 2, 0), (0.4, 0.55, 2, 1), (0.6, 0.7, 2, 1), (0.8, 0.9, 2, 2)]
    assert [b["mean_p"] for b in c["bins"]] == pytest.approx([0.075, 0.25, 0.475, 0.65, 0.85])
    assert [b["observed"] for b in c["bins"]] == pytest.approx([0, 0, 0.5, 0.5, 1])
    # Wilson, 0 of 2 at 95% (z = 1.96): [0, z² / (n + z²)] = [0, 3.8416 / 5.8416]
    assert c["bins"][0]["observed_ci95"] == pytest.approx([0, 3.8416 / 5.8416], abs=1e-4)


def test_calibration_wilson_interval_and_ties():
    # One group: 3 malignant of 10. Wilson by hand (z = 1.96): centre (0.3 + z²/20) / (1 + z²/10) = 0.35551,
    # half-width z·sqrt(0.3·0.7/10 + z²/400) / (1 + z²/10) = 0.24772.
    c = calibration([1, 1, 1] + [0] * 7, [0.3] * 10, n_bins=5)  # every P(malignant) the same: one group
    assert len(c["bins"]) == 1 and c["bins"][0]["n"] == 10 and c["bins"][0]["n_malignant"] == 3
    assert c["bins"][0]["observed_ci95"] == pytest.approx([0.35551 - 0.24772, 0.35551 + 0.24772], abs=1e-4)
    assert c["brier"] == pytest.approx((3 * 0.7 ** 2 + 7 * 0.3 ** 2) / 10)
    with pytest.raises(ValueError, match="at least one image"):
        calibration([], [])


def test_per_image_records_are_read_back_or_refused_by_name():
    from tumortrace.metrics import per_image_labels

    assert per_image_labels([{"label": "malignant", "p_malignant": 1}, {"label": "benign", "p_malignant": 0.25}]) == \
        ([1, 0], [1.0, 0.25])
    for record, said in (({"label": "normal", "p_malignant": 0.3}, "label is 'normal'"),
                         ({"label": "benign", "p_malignant": -0.1}, "p_malignant is -0.1"),
                         ({"label": "benign", "p_malignant": float("nan")}, "p_malignant is nan"),
                         ({"label": "benign", "p_malignant": True}, "p_malignant is True")):
        with pytest.raises(ValueError, match=said):
            per_image_labels([record])
