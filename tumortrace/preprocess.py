"""The one preprocessing path used by training, evaluation, the app and Grad-CAM alike.

pixels (float [0,1], gray or RGB) → uint8 3×S×S (the cached form) → float, ImageNet-style normalised.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb_float(pixels: np.ndarray) -> np.ndarray:
    """H×W or H×W×3 float in [0,1] → H×W×3 float32 (grayscale replicated)."""
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3], dtype=np.float32)


def _resized_levels(pixels: np.ndarray, image_size: int) -> torch.Tensor:
    """C×S×S float holding the cached form's integer levels 0..255 (C = 1 for grayscale, else 3): an
    antialiased bilinear resize (aspect not kept, as in training), clamped, ×255, rounded."""
    if pixels.ndim == 2:
        chw = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
    else:
        chw = torch.from_numpy(to_rgb_float(pixels)).permute(2, 0, 1)
    # torchvision's resize of a float tensor is this call (tested equal), without its dispatch.
    chw = F.interpolate(chw[None], size=(image_size, image_size), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return chw.clamp_(0, 1).mul_(255).round_()


def resized_uint8(pixels: np.ndarray, image_size: int) -> torch.Tensor:
    """The cached form of an image: uint8 3×S×S.

    Grayscale is resized as one channel and then replicated: the same result at a third of the cost.
    """
    out = _resized_levels(pixels, image_size).to(torch.uint8)
    return out.expand(3, -1, -1).contiguous() if out.shape[0] == 1 else out


@functools.lru_cache(maxsize=16)
def _mean_std(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """3×1×1 float32 tensors, made once per model (never written to: shared by every request)."""
    return (torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1),
            torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))


def _standardised(levels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Float levels 0..255 (…×C×S×S, C = 1 broadcast to 3) → ImageNet-style normalised: the one formula
    that training, evaluation and the app share."""
    m, s = _mean_std(tuple(mean), tuple(std))
    return (levels.div_(255) - m) / s


def normalize(batch_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    return _standardised(batch_uint8.float(), mean, std)


def model_input(pixels: np.ndarray, image_size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """One image → a 1×3×S×S tensor ready for the model: ``normalize(resized_uint8(...))`` bit for bit
    (tested), without the round trip through uint8 and the replicated channels, which the normalisation's
    broadcasting makes (0.95 → 0.72 ms for a 766×588 slice right after a forward pass)."""
    return _standardised(_resized_levels(pixels, image_size), mean, std).unsqueeze(0)


ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)  # torchvision's RandomErasing defaults


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float],
                    erasing: float = 0.0) -> v2.Compose:
    """The seeds' augmentations, applied to the cached uint8 image; optionally random erasing.

    Erasing (probability ``erasing``) sets a random rectangle to the mean intensity, so no single
    region (a caliper mark, burned-in text) can carry the decision alone.
    """
    steps = [
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(15),
        v2.RandomResizedCrop(image_size, scale=(0.8, 1.0), antialias=True),
        v2.ColorJitter(brightness=0.2, contrast=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]
    if erasing > 0:
        steps.append(v2.RandomErasing(erasing, scale=ERASE_SCALE, ratio=ERASE_RATIO, value=0))
    return v2.Compose(steps)


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose([
        v2.Resize([image_size, image_size], antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])
