"""Training throughput: images/s and the share of step time spent waiting for data, per architecture.

    python benchmarks/train_throughput.py [--device auto] [--image-size 224] [--batch-size 32] [--images 256]

Uses random uint8 images held decoded in memory (as training/train.py caches them) with the real
training augmentations, one epoch per setting after a warm-up epoch, workers 0 and 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumortrace.data import SliceDataset  # noqa: E402
from tumortrace.engine import select_device, train_one_epoch  # noqa: E402
from tumortrace.models import ARCHS, TumorClassifier  # noqa: E402
from tumortrace.preprocess import train_transform  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--image-size", type=int, default=224, help="input size (default: 224)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--images", type=int, default=256, help="images per timed epoch (default: 256)")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), help="architectures (default: all)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (default: off)")
    args = p.parse_args()
    device = select_device(args.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 2, (args.images,), generator=g).tolist()
    print(f"# device {device}, {torch.get_num_threads()} threads, {args.image_size}², batch {args.batch_size}")
    print("| arch | workers | images/s | data wait |\n|---|---|---|---|")
    for arch in args.archs:
        model = TumorClassifier(arch=arch, image_size=args.image_size).to(device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        ds = SliceDataset(images, labels, train_transform(args.image_size, model.mean, model.std))
        for workers in (0, 2):
            loader = DataLoader(ds, args.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                                pin_memory=device.type == "cuda")
            train_one_epoch(model, loader, nn.CrossEntropyLoss(), opt, device, 0, False, args.channels_last)  # warm-up
            s = train_one_epoch(model, loader, nn.CrossEntropyLoss(), opt, device, 1, False, args.channels_last)
            print(f"| {arch} | {workers} | {s['images_per_s']:.1f} | {s['data_wait_fraction']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
