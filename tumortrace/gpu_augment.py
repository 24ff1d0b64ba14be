"""The training augmentations for a whole batch at once, on the device that trains.

On a GPU, per-image augmentation in DataLoader workers caps training at what the CPU cores can augment
(about 2,000 images/s on 12 cores at 224², against a model that trains 5× faster). Here the cached uint8
images live on the GPU, and flip, rotation and random-resized crop are one affine resampling per image
(``affine_grid`` + ``grid_sample``), followed by brightness/contrast jitter, normalisation and
(optionally) random erasing.

It draws from the same distributions as ``preprocess.train_transform`` with two documented differences:
one bilinear resampling replaces torchvision's nearest-neighbour rotation followed by a bilinear crop,
and a crop box larger than the image is clamped to the image instead of re-drawn.
Random parameters come from the CPU generator (small), so resuming restores them like the rest; the
per-image arithmetic on them stays on the CPU too, and crosses to the GPU in one asynchronous copy, so a
batch costs about a dozen kernel launches and should never make the CPU wait for the GPU (a CUDA-only test,
``test_device_batches_never_wait_for_the_gpu``, checks this with torch's sync debug mode; on any machine,
``test_a_training_epoch_reads_from_the_device_only_after_its_last_step`` runs a whole training epoch on the
meta device and finds no read-back before the last step and two host-to-device copies per batch; both
passed on an H100). ``DeviceBatches(side_stream=True)`` augments the next batch on a second CUDA stream
while the current step runs: the augmentation's 1.8 ms of GPU work per batch of 128 then overlaps the
model's kernels instead of queueing behind them (benchmarks/HISTORY.md).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
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
        self._constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        # One draw from the torch generator (resumable), then NumPy arithmetic on the CPU: each torch op on
        # a 128-element tensor costs some microseconds of Python and dispatch, and this runs before every
        # batch on the CPU thread that also has to keep the GPU fed.
        u = torch.rand(n, 13, generator=generator, dtype=torch.float64).numpy()
        ranges = np.array([self.scale, np.log(self.ratio), ERASE_SCALE, np.log(ERASE_RATIO),
                           (-self.degrees, self.degrees), (1 - self.brightness, 1 + self.brightness),
                           (1 - self.contrast, 1 + self.contrast)], dtype=np.float64)  # 7 × (low, high)
        uniform = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * u[:, :7]
        area, log_ratio, e_area, e_log_ratio, angle, brightness, contrast = uniform.T
        ratio, e_ratio = np.exp(log_ratio), np.exp(e_log_ratio)
        w = np.minimum(np.sqrt(area * ratio), 1.0)  # crop size as a fraction of the image side
        h = np.minimum(np.sqrt(area / ratio), 1.0)
        ew = np.minimum(np.sqrt(e_area * e_ratio), 1.0)
        eh = np.minimum(np.sqrt(e_area / e_ratio), 1.0)
        params = {
            "erase": u[:, 7] < self.erasing,
            # erased rectangle: left/top edge and size as fractions of the output side
            "ex": u[:, 8] * (1 - ew), "ey": u[:, 9] * (1 - eh), "ew": ew, "eh": eh,
            "flip": u[:, 10] < 0.5,
            "angle": angle,
            # crop centre in normalised coordinates [-1, 1]; the box stays inside the (rotated) image
            "cx": 2 * (u[:, 11] * (1 - w) + w / 2) - 1, "cy": 2 * (u[:, 12] * (1 - h) + h / 2) - 1,
            "w": w, "h": h, "brightness": brightness, "contrast": contrast,
        }
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}

    def per_image(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """N×13 float32 on the CPU: all that ``apply`` needs per image, computed where the parameters are.

        The columns: the 2×3 affine map (6), brightness ÷ 255 (the images stay 0–255 until then), contrast,
        and the erased rectangle (left, top, width, height, on/off). Doing this arithmetic on the GPU cost
        some 30 kernel launches on 128 numbers; here it is one host-to-device copy.
        """
        p = {k: v.numpy() for k, v in params.items()}
        n = len(p["angle"])
        zeros = np.zeros(n)
        columns = [*self.affine(p).reshape(n, 6).T, p["brightness"] / 255, p["contrast"],
                   *(p.get(k, zeros) for k in ("ex", "ey", "ew", "eh")), p.get("erase", zeros)]
        return torch.from_numpy(np.stack(columns, 1).astype(np.float32))

    @staticmethod
    def to_device(packed: torch.Tensor, device: torch.device) -> torch.Tensor:
        """One pinned, asynchronous copy: a copy from pageable memory makes the CPU wait for the GPU."""
        if device.type == "cuda":
            return packed.pin_memory().to(device, non_blocking=True)
        return packed.to(device)

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1/std, −mean/std, luma weights, pixel centres), made once per device.

        Made per batch they were blocking copies from pageable memory: each one stopped the CPU until the GPU
        had finished the previous training step, so the next batch could not be queued ahead.
        """
        if device not in self._constants:
            mean = torch.tensor(self.mean, dtype=torch.float64)
            std = torch.tensor(self.std, dtype=torch.float64)
            luma = torch.tensor([0.299, 0.587, 0.114])
            centres = (torch.arange(self.image_size, dtype=torch.float64) + 0.5) / self.image_size
            self._constants[device] = tuple(t.float().to(device) for t in
                                            ((1 / std).view(1, -1, 1, 1), (-mean / std).view(1, -1, 1, 1), luma,
                                             centres))
        return self._constants[device]

    @staticmethod
    def affine(params: dict[str, np.ndarray]) -> np.ndarray:
        """N×2×3 maps from output to input coordinates: crop box → rotation about the centre → flip."""
        a = np.deg2rad(params["angle"])
        cos, sin = np.cos(a), np.sin(a)
        fx = 1 - 2 * params["flip"].astype(np.float64)
        w, h, cx, cy = params["w"], params["h"], params["cx"], params["cy"]
        # source = Flip · Rot · (centre + diag(w, h) · u)
        return np.stack([
            np.stack([fx * cos * w, -fx * sin * h, fx * (cos * cx - sin * cy)], 1),
            np.stack([sin * w, cos * h, sin * cx + cos * cy], 1),
        ], 1)

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """uint8 N×C×S×S (any device) → the model's normalised float input, augmented with ``params``.

        ``params`` live on the CPU (``sample_params``). On the device: one resampling, then brightness,
        contrast and normalisation as three multiply-adds with clamps, so about a dozen kernels per batch.
        """
        n, c = images.shape[:2]
        erase_any = "erase" in params and bool(params["erase"].any())  # decided on the CPU: no GPU sync
        per_image = self.to_device(self.per_image(params), images.device)
        inv_std, shift, luma, centres = self.constants(images.device)
        theta, brightness, contrast = per_image[:, :6].view(n, 2, 3), per_image[:, 6], per_image[:, 7]
        grid = F.affine_grid(theta, [n, c, self.image_size, self.image_size], align_corners=False)
        # resampling is linear, so the 0–255 scale is divided out with the brightness factor below
        x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = x.mul_(brightness.view(-1, 1, 1, 1)).clamp_(0, 1)
        channel_means = x.mean(dim=(2, 3))  # the mean of the gray image is the luma-weighted channel means
        gray_mean = channel_means @ luma if c == 3 else channel_means[:, 0]
        k = contrast.view(-1, 1, 1, 1)
        # (x − m)·k + m, as one multiply-add
        x = torch.addcmul((gray_mean * (1 - contrast)).view(-1, 1, 1, 1), x, k).clamp_(0, 1)
        x = torch.addcmul(shift, x, inv_std)  # (x − mean) / std
        if erase_any:
            def span(start: int):
                lo, size = per_image[:, start].view(-1, 1), per_image[:, start + 2].view(-1, 1)
                return (centres >= lo) & (centres < lo + size)
            box = span(9)[:, :, None] & span(8)[:, None, :]  # rows from top/height, columns from left/width
            box &= (per_image[:, 12] > 0.5).view(-1, 1, 1)
            x = x.masked_fill(box[:, None], 0.0)  # 0 after normalisation = the mean intensity
        return x

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images, self.sample_params(len(images)))


class DeviceBatches:
    """Training batches from uint8 images held on the training device, augmented there (no loader workers).

    ``sampler`` is any index sampler (random, class-weighted, distributed); it defaults to a random order.
    ``side_stream`` (CUDA only): augment the next batch on a second CUDA stream while the training step of
    this one runs, so the augmentation's memory-bound kernels overlap the model's instead of queueing behind
    them. The batches are the same either way (same parameters, same kernels).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, augment: GpuAugment,
                 sampler: Sampler | None = None, drop_last: bool = True, side_stream: bool = False):
        self.images, self.labels, self.augment = images, labels.to(images.device), augment
        self.sampler = sampler if sampler is not None else RandomSampler(range(len(labels)))
        self.batches = BatchSampler(self.sampler, batch_size, drop_last)
        self.side_stream = side_stream and images.device.type == "cuda"

    def __len__(self) -> int:
        return len(self.batches)

    def batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # pinned + non_blocking, like the parameters: no host wait on the copy
        idx = GpuAugment.to_device(torch.as_tensor(idx), self.images.device)
        return self.augment(self.images[idx]), self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.side_stream:
            for idx in self.batches:
                yield self.batch(idx)
            return
        consumer = torch.cuda.current_stream(self.images.device)
        side = torch.cuda.Stream(self.images.device)
        side.wait_stream(consumer)  # the images and the augmentation's constants were made on the consumer's
        ahead = None
        for idx in self.batches:
            with torch.cuda.stream(side):
                batch = self.batch(idx)
                made = torch.cuda.Event()
                made.record(side)
            if ahead is not None:
                yield self._hand_over(*ahead, consumer)
            ahead = batch, made
        if ahead is not None:
            yield self._hand_over(*ahead, consumer)

    @staticmethod
    def _hand_over(batch, made, consumer):
        # wait for this batch only: the side stream already holds the next one's work
        consumer.wait_event(made)
        for t in batch:
            # made on the side stream, used on the consumer's: the allocator must not reuse the memory
            # before the consumer's work on it is done
            t.record_stream(consumer)
        return batch
