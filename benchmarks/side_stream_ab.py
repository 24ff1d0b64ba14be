"""Real training with the GPU augmentation on the training stream or on a side stream, for an A/B on one GPU.

    for round in 1 2 3; do for mode in plain side; do
      python benchmarks/side_stream_ab.py $mode --data DATA --arch resnet18 --out /tmp/ab_$mode$round \
        --epochs 8 --patience 100 --channels-last --skip-test --no-progress
    done; done

The first argument is ``plain`` (every batch augmented on the stream that trains) or ``side`` (the next
batch augmented on a second CUDA stream, what training/train.py does without --compile); the rest go to
training/train.py unchanged. Compare the epochs' img/s within one machine, alternating the two.
"""
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "training")]

import tumortrace.gpu_augment as gpu_augment  # noqa: E402


def force_side_stream(on: bool) -> None:
    init = gpu_augment.DeviceBatches.__init__

    def forced(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.side_stream = on and self.images.device.type == "cuda"

    gpu_augment.DeviceBatches.__init__ = forced


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("plain", "side"):
        sys.exit(__doc__)
    force_side_stream(sys.argv.pop(1) == "side")
    import train
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return train.main(train.get_args_parser().parse_args())


if __name__ == "__main__":
    sys.exit(main())
