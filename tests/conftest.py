from __future__ import annotations

import os
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import write_class_folders, write_manifest_set  # noqa: E402

BUSI = ROOT.parent / "shared" / "data" / "busi"
PY = sys.executable


def run_cli(*args: str, timeout: int = 600, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2", **(env or {}))
    proc = subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def manifest_data(tmp_path_factory) -> Path:
    return write_manifest_set(tmp_path_factory.mktemp("manifest_data"), n_per_class=24)


@pytest.fixture(scope="session")
def folder_data(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("folder_data"), n_per_class=12)


TINY_TRAIN = ("--arch", "efficientnet_lite0", "--image-size", "64", "--batch-size", "8", "--epochs", "4",
              "--bootstrap", "50", "--no-progress", "--workers", "0", "--modality", "synthetic",
              "--data-name", "synthetic test blobs")


@pytest.fixture(scope="session")
def trained_model(manifest_data, tmp_path_factory) -> Path:
    """A real model folder made by training/train.py on synthetic data (shared by many tests)."""
    out = tmp_path_factory.mktemp("model") / "tiny"
    run_cli("training/train.py", "--data", str(manifest_data), "--out", str(out), *TINY_TRAIN, check=True)
    return out


@contextmanager
def _warning_filters_left_alone():
    real = warnings.catch_warnings

    def refuse(*args, **kwargs):
        raise AssertionError("warnings.catch_warnings swaps the process's filter list and is not thread-safe; "
                             "code that runs on the app's threads must not use it")
    warnings.catch_warnings = refuse
    try:
        yield
    finally:
        warnings.catch_warnings = real


@pytest.fixture
def warning_filters_left_alone():
    """A context manager inside which ``warnings.catch_warnings`` fails the test. It replaces the process's
    filter list and puts its saved copy back on exit, so two threads using it at once can leave every warning
    ignored or drop each other's filters; the app decodes uploads, builds trunks and computes metrics on
    threads of its own. (Not a fixture that patches for the whole test: pytest itself enters catch_warnings
    around each phase of a test.)"""
    return _warning_filters_left_alone
