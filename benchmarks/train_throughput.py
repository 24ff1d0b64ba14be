"""Training throughput: images/s and the share of step time spent waiting for data, per architecture.

    python benchmarks/train_throughput.py [--device auto] [--image-size 224] [--batch-sizes 32] [--images N]

Random uint8 images held decoded in memory (as training/train.py caches them) go through the real
training augmentations in DataLoader workers; one warm-up epoch, then one timed epoch per setting.

On CPU: fp32, loader workers 0 and 2. On CUDA, per architecture and batch size, each precision /
memory-format / compile setting is timed three ways: with batches already on the GPU (the model's
ceiling, no input work), with the DataLoader (augmentation in CPU workers, as --augment-on cpu), and
with the augmentation on the GPU (tumortrace.gpu_augment, as --augment-on gpu, the default on CUDA), and
with that augmentation on a second CUDA stream, one batch ahead (``DeviceBatches(side_stream=True)``).
"data wait" is 1 - fed/ceiling: the share of GPU time lost to input.

Both print the CPU time the GPU augmentation spends per batch before its kernels are queued (drawing the
parameters and packing them, ``GpuAugment.per_image``): on a GPU that is not kept busy, this is data wait.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402
from inference import timed  # noqa: E402

from tumortrace.data import SliceDataset  # noqa: E402
from tumortrace.engine import select_device, train_one_epoch  # noqa: E402
from tumortrace.gpu_augment import DeviceBatches, GpuAugment  # noqa: E402
from tumortrace.models import ARCHS, TumorClassifier  # noqa: E402
from tumortrace.preprocess import train_transform  # noqa: E402

GPU_SETTINGS = (  # (name, bf16 autocast, channels_last, torch.compile)
    ("fp32", False, False, False),
    ("bf16", True, False, False),
    ("bf16 + channels_last", True, True, False),
    ("bf16 + channels_last + compile", True, True, True),
)


def epoch(model, batches, opt, device, channels_last=False, amp=True) -> dict:
    return train_one_epoch(model, batches, nn.CrossEntropyLoss(), opt, device, 0, False, channels_last, amp)


def host_side_ms(image_size: int, batch: int, runs: int = 500) -> float:
    """Median CPU milliseconds of GpuAugment's per-batch host work (parameters drawn and packed)."""
    augment = GpuAugment(image_size, (0.5,) * 3, (0.25,) * 3, erasing=0.5)
    return timed(lambda: augment.per_image(augment.sample_params(batch)), runs)["p50"]


def print_host_side(args) -> None:
    print("GPU augmentation, CPU work per batch before its kernels: " + ", ".join(
        f"batch {b}: {host_side_ms(args.image_size, b):.3f} ms" for b in args.batch_sizes))


def cpu_table(args, device, images, labels) -> None:
    print(f"# device cpu: {machine.describe()}, {torch.get_num_threads()} threads, {args.image_size}², "
          f"batch {args.batch_sizes[0]}")
    print("| arch | workers | images/s | data wait |\n|---|---|---|---|")
    for arch in args.archs:
        model = TumorClassifier(arch=arch, image_size=args.image_size)
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        ds = SliceDataset(images, labels, train_transform(args.image_size, model.mean, model.std))
        for workers in (0, 2):
            loader = DataLoader(ds, args.batch_sizes[0], shuffle=True, drop_last=True, num_workers=workers)
            epoch(model, loader, opt, device)  # warm-up
            s = epoch(model, loader, opt, device)
            print(f"| {arch} | {workers} | {s['images_per_s']:.1f} | {s['data_wait_fraction']:.1%} |")


def augment_gpu_ms(batches: DeviceBatches, runs: int = 50) -> float:
    """Median GPU milliseconds of one batch's augmentation (gather, resampling, jitter), between CUDA events."""
    times = []
    for _, idx in zip(range(runs), batches.batches):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        batches.batch(idx)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def gpu_table(args, device, images, labels) -> None:
    workers = args.workers if args.workers is not None else min(12, os.cpu_count() or 1)
    print(f"# device {torch.cuda.get_device_name(device)}, torch {torch.__version__}, {args.image_size}², "
          f"{len(labels)} images per epoch, loader workers {workers}")
    print("| arch | batch | setting | ceiling img/s (batches on GPU) | CPU-worker loader img/s | data wait | "
          "GPU augment img/s | data wait | GPU augment, side stream img/s | data wait |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        for batch in args.batch_sizes:
            ds = SliceDataset(images, labels, train_transform(args.image_size, (0.5,) * 3, (0.25,) * 3))
            loader = DataLoader(ds, batch, shuffle=True, drop_last=True, num_workers=workers,
                                persistent_workers=workers > 0, pin_memory=True, prefetch_factor=4 if workers else None)
            on_gpu = DeviceBatches(images.to(device), torch.as_tensor(labels), batch,
                                   GpuAugment(args.image_size, (0.5,) * 3, (0.25,) * 3))
            side = DeviceBatches(on_gpu.images, on_gpu.labels, batch, on_gpu.augment, side_stream=True)
            print(f"GPU time of the augmentation alone, batch {batch}: {augment_gpu_ms(on_gpu):.2f} ms", flush=True)
            g = torch.Generator(device=device).manual_seed(0)
            resident = [(torch.randn(batch, 3, args.image_size, args.image_size, device=device, generator=g),
                         torch.randint(0, 2, (batch,), device=device, generator=g))
                        for _ in range(len(labels) // batch)]
            for name, amp, cl, compiled in GPU_SETTINGS:
                if compiled and args.no_compile:
                    continue
                torch.manual_seed(0)
                model = TumorClassifier(arch=arch, image_size=args.image_size).to(device)
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                opt = torch.optim.AdamW(model.parameters(), 1e-4)
                run = torch.compile(model) if compiled else model
                epoch(run, resident, opt, device, cl, amp)  # warm-up (and compilation)
                ceiling = epoch(run, resident, opt, device, cl, amp)
                if args.cpu_loader:
                    epoch(run, loader, opt, device, cl, amp)  # warm-up: workers start, pinned buffers
                    fed = epoch(run, loader, opt, device, cl, amp)
                epoch(run, on_gpu, opt, device, cl, amp)
                gpu_fed = epoch(run, on_gpu, opt, device, cl, amp)
                epoch(run, side, opt, device, cl, amp)
                side_fed = epoch(run, side, opt, device, cl, amp)

                def lost(s):
                    return f"{max(0.0, 1 - s['images_per_s'] / ceiling['images_per_s']):.1%}"
                cpu_fed = f"{fed['images_per_s']:.0f} | {lost(fed)}" if args.cpu_loader else "not run | "
                print(f"| {arch} | {batch} | {name} | {ceiling['images_per_s']:.0f} | {cpu_fed} | "
                      f"{gpu_fed['images_per_s']:.0f} | {lost(gpu_fed)} | {side_fed['images_per_s']:.0f} | "
                      f"{lost(side_fed)} |", flush=True)
                del run, model, opt
            del loader, resident, on_gpu, side
            torch.cuda.empty_cache()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--image-size", type=int, default=224, help="input size (default: 224)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="batch sizes (default: 32 on CPU; 32 and 128 on CUDA)")
    p.add_argument("--images", type=int, default=None, help="images per timed epoch (default: 256 CPU, 4096 CUDA)")
    p.add_argument("--workers", type=int, default=None, help="loader workers on CUDA (default: min(12, cores))")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), help="architectures (default: all)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (default: off)")
    p.add_argument("--no-cpu-loader", dest="cpu_loader", action="store_false",
                   help="skip the CPU-worker loader columns on CUDA, the slowest part (default: run them)")
    args = p.parse_args()
    device = select_device(args.device)
    cuda = device.type == "cuda"
    args.batch_sizes = args.batch_sizes or ([32, 128] if cuda else [32])
    n = args.images or (4096 if cuda else 256)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 2, (n,), generator=g).tolist()
    print_host_side(args)
    (gpu_table if cuda else cpu_table)(args, device, images, labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
