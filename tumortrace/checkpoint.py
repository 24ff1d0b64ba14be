"""Saving and loading models and training state.

A published model is a folder: ``config.json`` (the model's init arguments plus ``weights_sha256``)
and ``model.safetensors`` (fp16 by default, upcast to fp32 on load), with evaluation files beside.
Weights are only ever read from safetensors, with ``strict=True``, after their sha256 is checked.
The resumable training state is a separate ``resume_state.pt`` read with ``weights_only=True``.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .fusion import fused_for_inference, is_scripted
from .models import TumorClassifier

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
RESUME_NAME = "resume_state.pt"
# What a model folder may hold: the files published to and fetched from the Hub.
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, "evaluation.json", "history.json", "split.json", "README.md",
               "roc.png", "confusion_matrix.png", "curves.png")
HUB_TIMEOUT_S = 5.0


class ModelLoadError(RuntimeError):
    """The requested model cannot be used; nothing else is loaded in its place."""


# ---------------------------------------------------------------- atomic files
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which would race with threads creating files.
_FILE_MODE = 0o666 & ~_current_umask()


def atomic_write_with(path: str | Path, write: Callable[[str], None], durable: bool = True) -> None:
    """``write(tmp_path)`` into a temporary file beside ``path`` (same file system), fsync, then rename over
    ``path``: readers see the old file or the new one, never a partial one, and a failure (disk full) leaves
    the old file and no temporary file behind. The file gets the umask's mode, not mkstemp's 0600.
    ``durable=False`` skips the fsync, for files that need not survive a crash (the app's output cache)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)
        write(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data), durable)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | Path) -> None:
    atomic_write_with(path, lambda tmp: torch.save(obj, tmp))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- model folders
def save_model(model: TumorClassifier, out_dir: str | Path, dtype: torch.dtype = torch.float16) -> str:
    """Write model.safetensors (then config.json naming its sha256). Returns the sha256.

    With fp16, 1-D tensors (BatchNorm statistics, biases: ~2% of the bytes) stay fp32, since rounding
    them moves the outputs most.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() and v.ndim > 1 else v).contiguous().cpu()
             for k, v in model.state_dict().items()}
    weights = out_dir / WEIGHTS_NAME
    atomic_write_with(weights, lambda tmp: save_file(state, tmp, metadata={"format": "pt", "dtype": str(dtype)}))
    digest = sha256_file(weights)
    config = dict(model.config, weights_sha256=digest, weights_dtype=str(dtype).replace("torch.", ""))
    atomic_write_text(out_dir / CONFIG_NAME, json.dumps(config, indent=2))
    return digest


@dataclass
class LoadedModel:
    model: TumorClassifier
    config: dict
    folder: Path
    source: str  # what the user asked for: a local path or a Hub repo id
    revision: str | None  # the Hub commit actually used, None for a local folder
    folded: bool = False  # BatchNorm folded into the convolutions for serving (tumortrace.fusion)
    scripted: bool = False  # trunk frozen with TorchScript for serving (tumortrace.scripted)

    @property
    def sha256(self) -> str:
        return self.config["weights_sha256"]

    def file(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.is_file() else None


def load_model(folder: str | Path, source: str | None = None, revision: str | None = None,
               for_inference: bool = False, torchscript: bool = True) -> LoadedModel:
    """Load a model folder: verify the weights' sha256, build from config.json, load strictly, eval mode.

    ``for_inference``: serve a copy with BatchNorm folded into the convolutions and (``torchscript``) its
    trunk frozen with TorchScript, each checked against the checkpoint's own outputs (tumortrace.fusion).
    Training and evaluation use the model as trained.
    """
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (config_path, weights_path):
        if not p.is_file():
            raise ModelLoadError(f"{folder}: {p.name} is missing; not a TumorTrace model folder")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_path}: not valid JSON ({exc})") from None
    expected = config.get("weights_sha256")
    if not expected:
        raise ModelLoadError(f"{config_path} has no weights_sha256: cannot verify the weights, refusing them")
    actual = sha256_file(weights_path)
    if actual != expected:
        raise ModelLoadError(f"{weights_path}: sha256 {actual[:12]}… does not match config.json "
                             f"({expected[:12]}…): the file is truncated or was changed; refusing it")
    init_keys = TumorClassifier.__init__.__code__.co_varnames[1:TumorClassifier.__init__.__code__.co_argcount]
    try:
        model = TumorClassifier(**{k: v for k, v in config.items() if k in init_keys})
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights_path)).items()}
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # wrong arch, missing keys, corrupt header
        raise ModelLoadError(f"{folder}: weights do not fit the config ({type(exc).__name__}: {exc})") from None
    model.eval()
    served = fused_for_inference(model, torchscript) if for_inference else model
    return LoadedModel(served, config, folder, source or str(folder), revision, folded=served is not model,
                       scripted=is_scripted(served))


def resolve(model_id: str, revision: str | None = None, timeout: float = HUB_TIMEOUT_S) -> tuple[Path, str | None]:
    """A local folder as is, or a Hub repo id downloaded (within ``timeout`` seconds) to the local cache.

    Returns (folder, commit hash or None). Raises ModelLoadError with the reason.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local, None
    if model_id.count("/") != 1 or model_id.startswith((".", "/")):
        raise ModelLoadError(f"{model_id}: no such folder, and not a Hub repo id of the form ORG/NAME")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(_download, model_id, revision)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise ModelLoadError(f"Hub repo {model_id}: no answer within {timeout:.0f} s (offline or slow)") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _download(repo_id: str, revision: str | None) -> tuple[Path, str | None]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    folder = None
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, not at import: set by the caller's env
    for name in MODEL_FILES:
        try:
            path = Path(hf_hub_download(repo_id, name, revision=revision, endpoint=endpoint))
        except EntryNotFoundError:
            if name in (CONFIG_NAME, WEIGHTS_NAME):
                raise ModelLoadError(f"Hub repo {repo_id}@{revision or 'main'} has no {name}") from None
            continue
        except RevisionNotFoundError:
            raise ModelLoadError(f"Hub repo {repo_id}: revision {revision!r} does not exist") from None
        except RepositoryNotFoundError:
            raise ModelLoadError(f"Hub repo {repo_id} does not exist or is private (set HF_TOKEN)") from None
        except LocalEntryNotFoundError as exc:
            raise ModelLoadError(f"Hub repo {repo_id}: cannot reach the Hub and no cached copy "
                                 f"({type(exc.__cause__ or exc).__name__})") from None
        except (HfHubHTTPError, OSError) as exc:
            raise ModelLoadError(f"Hub repo {repo_id}: download failed ({type(exc).__name__}: {exc})") from None
        folder = path.parent
    commit = folder.name if folder is not None and folder.parent.name == "snapshots" else revision
    return folder, commit


def load(model_id: str, revision: str | None = None, timeout: float = HUB_TIMEOUT_S,
         for_inference: bool = False, torchscript: bool = True) -> LoadedModel:
    folder, commit = resolve(model_id, revision, timeout)
    return load_model(folder, source=model_id, revision=commit, for_inference=for_inference, torchscript=torchscript)


# ---------------------------------------------------------------- resumable training state
def save_resume_state(path: str | Path, state: dict) -> None:
    atomic_torch_save(state, path)


def load_resume_state(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
