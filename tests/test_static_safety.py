"""Source checks for rules that a runtime test cannot see everywhere."""
import re

from conftest import ROOT

SOURCES = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "tests" not in p.parts]


def test_every_torch_load_is_weights_only():
    calls = []
    for path in SOURCES:
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            calls.append((path.name, m.group(1)))
    assert calls, "expected torch.load calls in checkpoint/models"
    assert all("weights_only=True" in args for _, args in calls), calls


def test_no_pickle_and_strict_state_dict_loading():
    for path in SOURCES:
        text = path.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, path
        for m in re.finditer(r"load_state_dict\(([^)]*)\)", text):
            args = m.group(1)
            assert "strict=False" not in args, (path, args)
