"""The training augmentations for a whole batch at once, on the device that trains.

On a GPU, per-image augmentation in DataLoader workers caps training at what the CPU cores can augment
(about 2,000 images/s on 12 cores at 224², against a model that trains 5× faster). Here the cached uint8
images live on the GPU, and flip, rotation and random-resized crop are one affine resampling per image
(``affine_grid`` + ``grid_sample``), followed by brightness/contrast jitter, normalisation and
(optionally) random erasing.

It draws from the same distributions as ``preprocess.train_transform`` with two documented differences:
one bilinear resampling replaces torchvision's nearest-neighbour rotation followed by a bilinear crop,
and a crop box larger than the image is clamped to the image instead of re-drawn.
Random parameters come from the CPU generator (small), so resuming restores them like the rest.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, RandomSampler, Sampler

from .preprocess import ERASE_RATIO, ERASE_SCALE


class GpuAugment:
    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], degrees: float = 15.0,
                 scale: tuple[float, float] = (0.8, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 brightness: float = 0.2, contrast: float = 0.2, erasing: float = 0.0):
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.erasing = erasing
        self.degrees, self.scale, self.ratio = degrees, scale, ratio
        self.brightness, self.contrast = brightness, contrast

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        def uniform(lo, hi):
            return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

        area = uniform(*self.scale)
        log_ratio = uniform(math.log(self.ratio[0]), math.log(self.ratio[1]))
        w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)  # crop size as a fraction of the image side
        h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
        e_area = uniform(*ERASE_SCALE)
        e_log_ratio = uniform(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]))
        ew = torch.sqrt(e_area * e_log_ratio.exp()).clamp(max=1.0)
        eh = torch.sqrt(e_area / e_log_ratio.exp()).clamp(max=1.0)
        return {
            "erase": torch.rand(n, generator=generator) < self.erasing,
            # erased rectangle: left/top edge and size as fractions of the output side
            "ex": uniform(0, 1) * (1 - ew), "ey": uniform(0, 1) * (1 - eh), "ew": ew, "eh": eh,
            "flip": torch.rand(n, generator=generator) < 0.5,
            "angle": uniform(-self.degrees, self.degrees),
            # crop centre in normalised coordinates [-1, 1]; the box stays inside the (rotated) image
            "cx": (2 * (uniform(0, 1) * (1 - w) + w / 2) - 1), "cy": (2 * (uniform(0, 1) * (1 - h) + h / 2) - 1),
            "w": w, "h": h,
            "brightness": uniform(1 - self.brightness, 1 + self.brightness),
            "contrast": uniform(1 - self.contrast, 1 + self.contrast),
        }

    @staticmethod
    def to_device(params: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """All parameters in one pinned, asynchronous copy instead of a dozen small pageable ones.

        Meant to remove a host wait per batch; on an H100 it did not measurably change throughput
        (benchmarks/README.md): the remaining cost is kernel launches, not these copies.
        """
        if device.type != "cuda":
            return params
        names = list(params)
        packed = torch.stack([params[k].double() for k in names]).pin_memory().to(device, non_blocking=True)
        return {k: (row.bool() if params[k].dtype == torch.bool else row) for k, row in zip(names, packed)}

    @staticmethod
    def affine(params: dict[str, torch.Tensor]) -> torch.Tensor:
        """N×2×3 maps from output to input coordinates: crop box → rotation about the centre → flip."""
        a = torch.deg2rad(params["angle"])
        cos, sin = a.cos(), a.sin()
        fx = 1 - 2 * params["flip"].double()
        w, h, cx, cy = params["w"], params["h"], params["cx"], params["cy"]
        # source = Flip · Rot · (centre + diag(w, h) · u)
        theta = torch.stack([
            torch.stack([fx * cos * w, -fx * sin * h, fx * (cos * cx - sin * cy)], 1),
            torch.stack([sin * w, cos * h, sin * cx + cos * cy], 1),
        ], 1)
        return theta

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """uint8 N×C×S×S (any device) → the model's normalised float input, augmented with ``params``."""
        x = images.float().div_(255)
        n, c = x.shape[:2]
        erase_any = "erase" in params and bool(params["erase"].any())  # decided on the CPU: no GPU sync
        params = self.to_device(params, x.device)
        theta = self.affine(params).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, [n, c, self.image_size, self.image_size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        b = params["brightness"].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        k = params["contrast"].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        x = (x * b).clamp_(0, 1)
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]) if c == 3 else x[:, 0]
        m = gray.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        x = ((x - m) * k + m).clamp_(0, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
        if erase_any:
            pos = (torch.arange(self.image_size, device=x.device, dtype=x.dtype) + 0.5) / self.image_size

            def span(start, size):
                lo = params[start].to(device=x.device, dtype=x.dtype).view(-1, 1)
                return (pos >= lo) & (pos < lo + params[size].to(device=x.device, dtype=x.dtype).view(-1, 1))
            box = span("ey", "eh")[:, :, None] & span("ex", "ew")[:, None, :]
            box &= params["erase"].to(x.device).view(-1, 1, 1)
            x = x.masked_fill(box[:, None], 0.0)  # 0 after normalisation = the mean intensity
        return x

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images, self.sample_params(len(images)))


class DeviceBatches:
    """Training batches from uint8 images held on the training device, augmented there (no loader workers).

    ``sampler`` is any index sampler (random, class-weighted, distributed); it defaults to a random order.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, augment: GpuAugment,
                 sampler: Sampler | None = None, drop_last: bool = True):
        self.images, self.labels, self.augment = images, labels.to(images.device), augment
        self.sampler = sampler if sampler is not None else RandomSampler(range(len(labels)))
        self.batches = BatchSampler(self.sampler, batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cuda = self.images.device.type == "cuda"
        for idx in self.batches:
            idx = torch.as_tensor(idx)
            # pinned + non_blocking, like the parameters (GpuAugment.to_device): no host wait on the copy
            idx = idx.pin_memory().to(self.images.device, non_blocking=True) if cuda else idx
            yield self.augment(self.images[idx]), self.labels[idx]
