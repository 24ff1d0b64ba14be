"""Model download from a Hub: real huggingface_hub against a Hub-compatible server on 127.0.0.1."""
import time

import pytest
import torch

from hub_server import FakeHub, HubRepo
from tumortrace.checkpoint import MODEL_FILES, ModelLoadError, load, load_model
from tumortrace.registry import build_registry


@pytest.fixture()
def hub_env(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    def use(hub):
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    return use


def test_download_pinned_revision_loads_the_same_model(trained_model, hub_env):
    with FakeHub() as hub:
        hub.repos["lab/tiny"] = repo = HubRepo(trained_model, MODEL_FILES)
        hub_env(hub)
        loaded = load("lab/tiny", revision=repo.commit)
    local = load_model(trained_model)
    assert loaded.revision == repo.commit and loaded.sha256 == local.sha256
    assert loaded.file("evaluation.json") is not None and loaded.file("resume_state.pt") is None
    x = torch.randn(2, 3, local.model.image_size, local.model.image_size)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), local.model(x))
    assert any("/resolve/" + repo.commit + "/model.safetensors" in r for r in hub.requests)


def test_missing_revision_and_repo_are_clear_errors(trained_model, hub_env):
    with FakeHub() as hub:
        hub.repos["lab/tiny"] = HubRepo(trained_model, MODEL_FILES)
        hub_env(hub)
        with pytest.raises(ModelLoadError, match="revision 'v9' does not exist"):
            load("lab/tiny", revision="v9")
        with pytest.raises(ModelLoadError, match="does not exist or is private"):
            load("lab/absent")


def test_repo_without_weights_is_refused(trained_model, hub_env):
    with FakeHub() as hub:
        hub.repos["lab/noweights"] = HubRepo(trained_model, ("config.json", "README.md"))
        hub_env(hub)
        with pytest.raises(ModelLoadError, match="has no model.safetensors"):
            load("lab/noweights")


def test_slow_hub_falls_back_to_shipped_weights_within_5_s(trained_model, hub_env, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "tiny").symlink_to(trained_model, target_is_directory=True)
    with FakeHub(delay_s=30) as hub:
        hub.repos["lab/tiny"] = HubRepo(trained_model, MODEL_FILES)
        hub_env(hub)
        start = time.monotonic()
        registry = build_registry("lab/tiny", weights_dir=weights)
        elapsed = time.monotonic() - start
    assert elapsed < 5 + 3  # 5 s Hub deadline + loading the local model
    assert registry.names == ["tiny"] and "lab/tiny" in registry.errors
    assert "could not be loaded" in registry.notice and "weights/" in registry.notice


def test_unreachable_hub_is_fast(trained_model, hub_env, tmp_path):
    with FakeHub() as hub:
        hub_env(hub)
    # the server is closed now: connection refused
    start = time.monotonic()
    with pytest.raises(ModelLoadError):
        load("lab/tiny")
    assert time.monotonic() - start < 6


def test_broken_local_model_is_an_error_not_a_substitution(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    registry = build_registry(str(tmp_path / "broken"), weights_dir=tmp_path)
    assert registry.names == [] and "model.safetensors is missing" in registry.errors[str(tmp_path / "broken")]


def test_tampered_shipped_model_is_listed_as_error_and_not_served(trained_model, tmp_path):
    weights = tmp_path / "weights"
    (weights / "good").mkdir(parents=True)
    (weights / "bad").mkdir()
    for p in trained_model.iterdir():
        for dest in ("good", "bad"):
            (weights / dest / p.name).write_bytes(p.read_bytes())
    data = bytearray((weights / "bad" / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (weights / "bad" / "model.safetensors").write_bytes(bytes(data))
    registry = build_registry(None, weights_dir=weights)
    assert registry.names == ["good"] and "does not match config.json" in registry.errors["bad"]
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        registry.get("bad")
