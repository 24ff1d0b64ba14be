import errno
import json

import pytest
import torch

from tumortrace.checkpoint import (ModelLoadError, atomic_write_bytes, load, load_model, save_model,
                                   sha256_file)
from tumortrace.models import TumorClassifier, load_imagenet_trunk


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    m = TumorClassifier(arch="efficientnet_lite0", image_size=96, modality="ultrasound", threshold=0.3).eval()
    load_imagenet_trunk(m)
    folder = tmp_path_factory.mktemp("ckpt")
    save_model(m, folder)
    return m, folder


def test_round_trip_fp16_within_1e3_and_config_is_init_args(saved):
    m, folder = saved
    loaded = load_model(folder)
    assert loaded.config["modality"] == "ultrasound" and loaded.model.threshold == 0.3
    assert loaded.config["weights_dtype"] == "float16" and loaded.sha256 == sha256_file(folder / "model.safetensors")
    x = torch.randn(4, 3, 96, 96)
    with torch.inference_mode():
        assert (m(x).softmax(1) - loaded.model(x).softmax(1)).abs().max() <= 1e-3
    assert next(loaded.model.parameters()).dtype == torch.float32  # upcast on load
    # the Hub mixin reads the same folder (its own loader; strict=True must be asked for)
    again = TumorClassifier.from_pretrained(folder, strict=True)
    assert again.modality == "ultrasound"


def test_tampered_and_truncated_weights_are_refused(saved, tmp_path):
    _, folder = saved
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-10] ^= 0x01
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match config.json"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelLoadError, match="truncated or was changed"):
        load_model(tmp_path)


def test_wrong_architecture_is_refused_even_with_matching_sha(saved, tmp_path):
    _, folder = saved
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    cfg["arch"] = "resnet18"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="do not fit the config"):
        load_model(tmp_path)


def test_missing_files_and_unknown_ids():
    with pytest.raises(ModelLoadError, match="not a Hub repo id"):
        load("/nonexistent/folder/x")


def test_disk_full_keeps_previous_checkpoint(saved, tmp_path, monkeypatch):
    m, folder = saved
    save_model(m, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk_midway(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial safetensors header")  # what a write cut off by a full disk leaves
        full_disk()
    monkeypatch.setattr("tumortrace.checkpoint.save_file", full_disk_midway)
    with pytest.raises(OSError, match="No space left"):
        save_model(m, tmp_path)
    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "config.json", b"{}")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # same files, same bytes, no temp files left behind
    load_model(tmp_path)


def test_atomic_write_fsyncs_unless_told_the_file_is_temporary(tmp_path, monkeypatch):
    import os
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write_bytes(tmp_path / "weights.bin", b"kept")
    assert len(synced) == 1
    atomic_write_bytes(tmp_path / "overlay.jpg", b"cache", durable=False)
    assert len(synced) == 1 and (tmp_path / "overlay.jpg").read_bytes() == b"cache"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
