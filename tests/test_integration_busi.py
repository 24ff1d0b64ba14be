"""On the real BUSI data in ../shared/data/busi (present in this project's CI, absent on a fresh clone)."""
import json

import pytest

from conftest import BUSI, ROOT, run_cli
from tumortrace.data import discover
from tumortrace.split import assign_splits

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (BUSI / "manifest.csv").is_file(),
                                 reason=f"BUSI data not found at {BUSI} (only in the project's CI/dev machines)")]
SHIPPED = sorted(p for p in (ROOT / "weights").glob("*/config.json"))


def test_busi_discovery_and_group_safe_split():
    samples = discover(BUSI)
    assert sum(s.label == 0 for s in samples) == 345 and sum(s.label == 1 for s in samples) == 162
    split = assign_splits(samples, seed=0)
    seen = {}
    for name, idx in split.items():
        for i in idx:
            assert seen.setdefault(samples[i].group, name) == name


@pytest.mark.slow
@pytest.mark.parametrize("config", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_evaluate_reproduces_shipped_test_metrics(config):
    folder = config.parent
    shipped = json.loads((folder / "evaluation.json").read_text())
    split = json.loads((folder / "split.json").read_text())
    test_groups = {r["group"] for r in split["test"]}
    assert not test_groups & {r["group"] for r in split["train"] + split["val"]}
    proc = run_cli("-m", "tumortrace.evaluate", "--model", str(folder), "--data", str(BUSI), "--bootstrap", "200",
                   check=True)
    got = json.loads(proc.stdout)
    assert got["n_images"] == shipped["n_images"]
    for which in ("default_0.5", "validated"):
        a, b = got["thresholds"][which]["metrics"], shipped["thresholds"][which]["metrics"]
        assert a["confusion_matrix"] == b["confusion_matrix"]
        assert a["roc_auc"] == pytest.approx(b["roc_auc"], abs=1e-6)
    assert got["calibration"]["brier"] == pytest.approx(shipped["calibration"]["brier"], abs=1e-6)
    assert [b["n_malignant"] for b in got["calibration"]["bins"]] == [b["n_malignant"] for b in shipped["calibration"]["bins"]]
