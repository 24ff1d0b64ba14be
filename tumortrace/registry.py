"""The models an app instance serves: a Hub repo or folder if asked for, else every folder in weights/.

Each model is loaded once at start. A model that fails to load is kept as an error with its reason
(shown in the UI and the log), never replaced by other weights under its name. When a requested Hub
model cannot be reached, the shipped ``weights/`` checkpoints are served instead and ``notice`` says so.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import CONFIG_NAME, HUB_TIMEOUT_S, LoadedModel, ModelLoadError, load

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@dataclass
class Registry:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notice: str = ""  # a plain-language line for the UI when what is served differs from what was asked

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str) -> LoadedModel:
        if name in self.models:
            return self.models[name]
        if name in self.errors:
            raise ModelLoadError(f"model {name!r} could not be loaded: {self.errors[name]}")
        raise ModelLoadError(f"unknown model {name!r}; available: {', '.join(self.models) or 'none'}")


def _name_for(loaded: LoadedModel) -> str:
    return loaded.source if loaded.revision else Path(loaded.source).name


def model_folders(weights_dir: Path) -> list[Path]:
    """The model folders (each with its config.json) in ``weights_dir``, sorted; none if it is not a folder."""
    return sorted(p for p in weights_dir.iterdir() if (p / CONFIG_NAME).is_file()) if weights_dir.is_dir() else []


def load_folder_of_models(weights_dir: Path, registry: Registry, fold_batchnorm: bool = True,
                          torchscript: bool = True) -> None:
    for folder in model_folders(weights_dir):
        try:
            loaded = load(str(folder), for_inference=fold_batchnorm, torchscript=torchscript)
            registry.models[_name_for(loaded)] = loaded
            log.info("loaded %s (sha256 %s…)", folder, loaded.sha256[:12])
        except ModelLoadError as exc:
            registry.errors[folder.name] = str(exc)
            log.error("MODEL NOT LOADED: %s", exc)


def build_registry(model: str | None = None, revision: str | None = None, weights_dir: Path = DEFAULT_WEIGHTS,
                   hub_timeout: float = HUB_TIMEOUT_S, fold_batchnorm: bool = True,
                   torchscript: bool = True) -> Registry:
    """``fold_batchnorm``: serve each model with BatchNorm folded into its convolutions (tumortrace.fusion);
    ``torchscript``: and with its trunk frozen with TorchScript (tumortrace.scripted)."""
    registry = Registry()
    if model:
        try:
            loaded = load(model, revision, timeout=hub_timeout, for_inference=fold_batchnorm, torchscript=torchscript)
            registry.models[_name_for(loaded)] = loaded
            log.info("loaded %s@%s (sha256 %s…)", model, loaded.revision or "local", loaded.sha256[:12])
            return registry
        except ModelLoadError as exc:
            registry.errors[model] = str(exc)
            log.error("MODEL NOT LOADED: %s", exc)
            if Path(model).expanduser().exists():
                return registry  # a broken local folder is an error, not a reason to serve something else
            registry.notice = (f"The requested Hub model {model} could not be loaded ({exc}). "
                               f"Serving the offline checkpoints shipped in {weights_dir.name}/ instead.")
    load_folder_of_models(weights_dir, registry, fold_batchnorm, torchscript)
    if not registry.models and not registry.notice:
        registry.notice = f"No model could be loaded from {weights_dir}."
    return registry
