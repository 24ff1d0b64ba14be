"""Publishing: the exact Hub operations sent, checked with an HfApi stand-in that records calls."""
import importlib.util
import json
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from tumortrace.checkpoint import ModelLoadError

spec = importlib.util.spec_from_file_location("push_to_hub", ROOT / "training" / "push_to_hub.py")
push_to_hub = importlib.util.module_from_spec(spec)
spec.loader.exec_module(push_to_hub)


class RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_commit(self, repo_id, operations, **kw):
        self.calls.append(("create_commit", repo_id, operations, kw))
        return type("CommitInfo", (), {"oid": "abc123"})()


def test_push_sends_published_files_only(trained_model):
    api = RecordingApi()
    assert push_to_hub.push(trained_model, "lab/tiny", True, "msg", api=api) == "abc123"
    (name, repo, kw), (name2, repo2, ops, kw2) = api.calls
    assert (name, repo, kw) == ("create_repo", "lab/tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    assert name2 == "create_commit" and kw2 == {"commit_message": "msg", "repo_type": "model"}
    sent = {op.path_in_repo: Path(op.path_or_fileobj) for op in ops}
    assert set(sent) == {"config.json", "model.safetensors", "evaluation.json", "history.json", "split.json",
                         "README.md", "roc.png", "confusion_matrix.png", "curves.png"}
    assert "resume_state.pt" not in sent
    assert all(p.read_bytes() == (trained_model / n).read_bytes() for n, p in sent.items())
    card = sent["README.md"].read_text()
    assert card.startswith("---\nlibrary_name: tumortrace\nlicense: apache-2.0") and "model-index" in card


def test_push_refuses_tampered_weights(trained_model, tmp_path):
    for p in trained_model.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["weights_sha256"] = "0" * 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    api = RecordingApi()
    with pytest.raises(ModelLoadError):
        push_to_hub.push(tmp_path, "lab/tiny", False, "m", api=api)
    assert api.calls == []


def test_push_cli_offline_fails_with_message(trained_model):
    proc = run_cli("training/push_to_hub.py", str(trained_model), "--repo-id", "lab/tiny", timeout=300,
                   env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_test"})
    assert proc.returncode == 1 and "upload to lab/tiny failed" in proc.stderr and "Traceback" not in proc.stderr
