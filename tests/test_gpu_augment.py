"""Batch augmentation on the training device: its geometry matches torchvision's ops, its batches their labels."""
import collections
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.data import WeightedRandomSampler
from torchvision.transforms.v2 import functional as TF

from tumortrace.engine import train_one_epoch
from tumortrace.gpu_augment import DeviceBatches, GpuAugment
from tumortrace.models import TumorClassifier
from tumortrace.preprocess import normalize

S = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def smooth_images(n=3, seed=0):
    """Smooth random images (bilinear-upsampled noise), so resampling methods can be compared."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g)
    return (torch.nn.functional.interpolate(small, size=(S, S), mode="bilinear") * 255).round().to(torch.uint8)


def params(n, **kw):
    base = {"flip": torch.zeros(n, dtype=torch.bool), "angle": torch.zeros(n, dtype=torch.float64),
            "cx": torch.zeros(n, dtype=torch.float64), "cy": torch.zeros(n, dtype=torch.float64),
            "w": torch.ones(n, dtype=torch.float64), "h": torch.ones(n, dtype=torch.float64),
            "brightness": torch.ones(n, dtype=torch.float64), "contrast": torch.ones(n, dtype=torch.float64)}
    base.update({k: torch.full((n,), float(v), dtype=torch.float64) if k != "flip" else torch.full((n,), v)
                 for k, v in kw.items()})
    return base


AUG = GpuAugment(S, MEAN, STD)


def test_identity_parameters_give_the_normalised_image():
    x = smooth_images()
    assert (AUG.apply(x, params(3)) - normalize(x, MEAN, STD)).abs().max() < 1e-5


def test_flip_and_right_angle_rotation_are_exact():
    x = smooth_images()
    ref = normalize(x, MEAN, STD)
    assert (AUG.apply(x, params(3, flip=True)) - ref.flip(-1)).abs().max() < 1e-5
    rotated = AUG.apply(x, params(3, angle=90))
    expected = normalize(TF.rotate(x, 90), MEAN, STD)  # torchvision's direction, counter-clockwise
    assert (rotated - expected).abs().max() < 1e-4


def test_small_rotation_close_to_torchvision():
    x = smooth_images()
    ours = AUG.apply(x, params(3, angle=10))
    theirs = normalize(TF.rotate(x, 10, interpolation=TF.InterpolationMode.BILINEAR), MEAN, STD)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # corners differ by fill only
    assert (ours - theirs)[inner].abs().mean() < 0.02


def test_crop_box_matches_resized_crop():
    x = smooth_images()
    ours = AUG.apply(x, params(3, w=0.5, h=0.5, cx=-0.5, cy=-0.5))  # the top-left quarter, enlarged 2×
    theirs = normalize(TF.resized_crop(x.float(), 0, 0, S // 2, S // 2, [S, S], antialias=False).round()
                       .clamp(0, 255).to(torch.uint8), MEAN, STD)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert (ours - theirs)[inner].abs().max() < 0.05  # theirs is rounded to uint8: ≤ 0.5/255/std


def test_brightness_and_contrast_follow_torchvision():
    x = smooth_images()
    ours = AUG.apply(x, params(3, brightness=1.2, contrast=0.8))
    f = x.float() / 255
    theirs = TF.adjust_contrast(TF.adjust_brightness(f, 1.2), 0.8)
    assert (ours - normalize(theirs * 255, MEAN, STD)).abs().max() < 1e-4


def test_sampled_parameters_stay_in_their_ranges():
    torch.manual_seed(0)
    p = AUG.sample_params(20000)
    assert 0.47 < p["flip"].float().mean() < 0.53
    assert p["angle"].abs().max() <= 15 and p["angle"].abs().max() > 14.9
    assert (p["w"] <= 1).all() and (p["h"] <= 1).all()
    area = p["w"] * p["h"]
    assert area.min() >= 0.8 * 3 / 4 * 0.99 and area.max() <= 1.0
    assert (p["cx"] - p["w"] >= -1 - 1e-9).all() and (p["cx"] + p["w"] <= 1 + 1e-9).all()
    assert (p["cy"] - p["h"] >= -1 - 1e-9).all() and (p["cy"] + p["h"] <= 1 + 1e-9).all()
    ratio = (p["w"] / p["h"])[(p["w"] < 1) & (p["h"] < 1)]
    assert ratio.min() >= 3 / 4 - 1e-6 and ratio.max() <= 4 / 3 + 1e-6
    assert 0.8 <= p["brightness"].min() and p["brightness"].max() <= 1.2
    torch.manual_seed(0)
    assert torch.equal(AUG.sample_params(20000)["angle"], p["angle"])  # the CPU generator: resumable


def test_device_batches_pair_images_with_their_labels():
    n = 10
    images = torch.arange(n, dtype=torch.uint8).mul(20).view(n, 1, 1, 1).expand(n, 3, S, S).contiguous()
    labels = torch.arange(n) % 2
    plain = GpuAugment(S, (0, 0, 0), (1, 1, 1), degrees=0, scale=(1, 1), ratio=(1, 1), brightness=0, contrast=0)
    batches = DeviceBatches(images, labels, batch_size=4, augment=plain)
    assert len(batches) == 2  # drop_last
    seen = []
    for x, y in batches:
        assert x.shape == (4, 3, S, S) and x.dtype == torch.float32
        which = (x[:, 0, S // 2, S // 2] * 255 / 20).round().long()
        assert torch.equal(labels[which], y)
        seen += which.tolist()
    assert len(set(seen)) == 8
    assert math.isclose(plain.apply(images, plain.sample_params(n)).mean().item(), images.float().mean().item() / 255,
                        rel_tol=1e-5)


def test_erasing_blanks_exactly_its_rectangle_to_the_mean():
    x = smooth_images()
    p = params(3, ex=0.25, ey=0.5, ew=0.25, eh=0.5)
    p["erase"] = torch.tensor([True, False, True])
    out, ref = AUG.apply(x, p), normalize(x, MEAN, STD)
    box = torch.zeros(S, S, dtype=torch.bool)
    box[S // 2:, S // 4:S // 2] = True
    assert (out[0][:, box] == 0).all() and (out[2][:, box] == 0).all()
    assert (out[0][:, ~box] - ref[0][:, ~box]).abs().max() < 1e-5
    assert (out[1] - ref[1]).abs().max() < 1e-5  # not erased


def test_erasing_probability_and_area_follow_torchvision_defaults():
    torch.manual_seed(0)
    p = GpuAugment(S, MEAN, STD, erasing=0.25).sample_params(20000)
    assert 0.23 < p["erase"].float().mean() < 0.27
    area = p["ew"] * p["eh"]
    assert area.min() >= 0.02 * 0.99 and area.max() <= 0.33 * 1.01
    assert (p["ex"] + p["ew"] <= 1 + 1e-9).all() and (p["ey"] + p["eh"] <= 1 + 1e-9).all()
    assert not AUG.sample_params(1000)["erase"].any()  # off by default


def test_cpu_transform_has_erasing_only_when_asked():
    from torchvision.transforms import v2

    from tumortrace.preprocess import train_transform
    assert not any(isinstance(t, v2.RandomErasing) for t in train_transform(S, MEAN, STD).transforms)
    erasing = [t for t in train_transform(S, MEAN, STD, 0.3).transforms if isinstance(t, v2.RandomErasing)]
    assert len(erasing) == 1 and erasing[0].p == 0.3


class DeviceOps(TorchDispatchMode):
    """What code does on ``device`` (the meta device standing in for a GPU), in three records.

    ``ops``: the operations that touch a tensor there (on a GPU each is a kernel launch or a copy).
    ``reads``: what would make the CPU wait for every queued kernel: a value read back (``.item()``,
    ``float()``, ``bool()``: ``_local_scalar_dense``, answered with 0 so the code runs on), a copy off the
    device, or an op whose output size depends on the data (``nonzero``).
    ``uploads``: host-to-device copies (from pageable memory they block the CPU until the GPU is idle).
    """

    VIEWS = {"view", "select", "slice", "unsqueeze", "t", "expand", "_unsafe_view", "alias", "as_strided", "detach"}
    DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "_unique2", "repeat_interleave"}

    def __init__(self, device: str = "meta"):
        super().__init__()
        self.device, self.ops, self.reads, self.uploads = device, collections.Counter(), [], 0

    def _here(self, *trees) -> bool:
        return any(isinstance(t, torch.Tensor) and t.device.type == self.device for t in tree_leaves(trees))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        inputs_here = self._here(args, kwargs)
        if inputs_here and name == "_local_scalar_dense":
            self.reads.append(name)
            return 0
        if inputs_here and name in self.DATA_DEPENDENT:
            self.reads.append(name)
        out = func(*args, **kwargs)
        if name not in self.VIEWS and (inputs_here or self._here(out)):
            self.ops[name] += 1
        if name in ("_to_copy", "copy_"):
            source, target = (args[0], out) if name == "_to_copy" else (args[1], args[0])
            if self._here(source) and not self._here(target):
                self.reads.append(name)
            elif self._here(target) and not self._here(source):
                self.uploads += 1
        return out


@pytest.mark.parametrize("erasing", [0.0, 1.0])
def test_a_batch_is_a_dozen_device_operations_and_one_parameter_copy(erasing):
    # The meta device stands in for a GPU: the count is of operations, not of time. The per-image arithmetic
    # (affine maps, factors, rectangles) is done on the CPU and crosses in one copy; the normalisation
    # constants are made once per device, not per batch (a per-batch copy from pageable memory blocks the CPU
    # until the GPU has finished the previous training step).
    aug = GpuAugment(224, MEAN, STD, erasing=erasing)
    images = torch.empty(128, 3, 224, 224, dtype=torch.uint8, device="meta")
    torch.manual_seed(0)
    aug(images)  # the first batch makes the constants
    with DeviceOps("meta") as counted:
        out = aug(images)
    assert out.shape == (128, 3, 224, 224) and out.dtype == torch.float32
    copies = counted.ops["_to_copy"] + counted.ops["copy_"]
    assert copies == 2, counted.ops  # the parameters, and the images to float
    assert sum(counted.ops.values()) <= (13 if erasing == 0 else 25), counted.ops  # was 57 and 75


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0"])
def test_a_training_epoch_reads_from_the_device_only_after_its_last_step(arch):
    # What training.train runs on a GPU (--augment-on gpu): batches augmented on the device, class-weighted
    # loss with label smoothing, AdamW. A read-back inside the loop would make the CPU wait for the GPU each
    # step, so the next batch could not be queued while the GPU computes (the data wait #5 measures).
    def epoch(steps: int) -> DeviceOps:
        torch.manual_seed(0)
        model = TumorClassifier(arch=arch, image_size=S).to("meta")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.7, 1.6]).to("meta"), label_smoothing=0.1)
        n = 4 * steps
        images = torch.empty(n, 3, S, S, dtype=torch.uint8, device="meta")
        batches = DeviceBatches(images, torch.arange(n) % 2, 4, GpuAugment(S, MEAN, STD, erasing=0.5),
                                WeightedRandomSampler(torch.ones(n), n))
        with DeviceOps() as traffic:
            stats = train_one_epoch(model, batches, criterion, optimizer, torch.device("meta"), 0,
                                    show_progress=False, channels_last=True)
        assert 0 <= stats["data_wait_fraction"] <= 1
        return traffic

    one, three = epoch(1), epoch(3)
    assert one.reads == three.reads == ["_local_scalar_dense"] * 2  # the epoch's loss and accuracy, once
    # per batch: its indices and its augmentation parameters (pinned and asynchronous on a GPU), nothing else
    assert three.uploads - one.uploads == 2 * 2, (one.uploads, three.uploads)


def test_side_stream_is_ignored_off_cuda():
    # CUDA streams exist only on CUDA: elsewhere the same batches come the plain way, not an error
    images = smooth_images(6)

    def epoch(side_stream: bool):
        torch.manual_seed(0)
        return list(DeviceBatches(images, torch.arange(6) % 2, 2, GpuAugment(S, MEAN, STD, erasing=0.5),
                                  side_stream=side_stream))

    plain, side = epoch(False), epoch(True)
    assert len(plain) == len(side) == 3
    assert all(torch.equal(x0, x1) and torch.equal(y0, y1) for (x0, y0), (x1, y1) in zip(plain, side))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA streams and "
                                                                    "torch's sync debug mode)")


@needs_cuda
@pytest.mark.parametrize("side_stream", [False, True])
def test_device_batches_never_wait_for_the_gpu(side_stream):
    images = torch.randint(0, 256, (64, 3, S, S), dtype=torch.uint8, device="cuda")
    batches = DeviceBatches(images, torch.arange(64) % 2, batch_size=16,
                            augment=GpuAugment(S, MEAN, STD, erasing=0.5), side_stream=side_stream)
    next(iter(batches))  # the first batch copies the constants to the GPU
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in batches:
            pass
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.isfinite(x).all() and len(y) == 16


@needs_cuda
def test_side_stream_batches_equal_the_plain_ones_under_a_busy_consumer():
    # The consumer's stream is kept busy (a long matrix product per batch, and memory freed and taken again,
    # as a training step does): a batch handed over before its side-stream work finished, or its memory
    # reused while the consumer still reads it, would show as a difference.
    images = torch.randint(0, 256, (96, 3, S, S), dtype=torch.uint8, device="cuda")
    labels = torch.arange(96) % 2
    a = torch.randn(2048, 2048, device="cuda")

    def epoch(side_stream: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        torch.manual_seed(0)
        batches = DeviceBatches(images, labels, 8, GpuAugment(S, MEAN, STD, erasing=0.5), side_stream=side_stream)
        seen = []
        for x, y in batches:
            for _ in range(4):
                a.copy_((a @ a).tanh_())
            seen.append((x.clone(), y.clone()))
            del x, y
        return seen

    plain, side = epoch(False), epoch(True)
    assert len(plain) == len(side) == 12
    for (x0, y0), (x1, y1) in zip(plain, side):
        assert torch.equal(y0, y1)
        assert torch.equal(x0, x1)
