"""Training-loop pieces: one epoch, prediction over a loader, early stopping, devices, RNG, distributed."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- devices, seeds, processes
def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA GPU is available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on GPU; plain fp32 on CPU (CPU bf16 is slower than fp32 on most CPUs)."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
            "numpy": np.random.get_state()[1].tolist(), "numpy_pos": int(np.random.get_state()[2]),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def all_reduce_mean(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def sync_buffers(model: nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's BatchNorm statistics, so validation (and early stopping) agree everywhere."""
    if info.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


# ---------------------------------------------------------------- optimiser defaults
DEFAULT_LR = {"adamw": 3e-4, "sgd": 0.01}


def learning_rate(opt: str, lr: float | None) -> float:
    """The starting learning rate: ``--lr``, or the optimiser's default (also what the model card states)."""
    return lr or DEFAULT_LR[opt]


# ---------------------------------------------------------------- early stopping
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0):
        if monitor not in ("val_loss", "val_auc"):
            raise ValueError("monitor must be val_loss or val_auc")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best = math.inf if monitor == "val_loss" else -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record one epoch's value; True when it is a new best."""
        sign = 1 if self.monitor == "val_auc" else -1
        if not math.isnan(value) and sign * (value - self.best) > self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


# ---------------------------------------------------------------- one epoch, and prediction
def train_one_epoch(model: nn.Module, loader, criterion, optimizer, device: torch.device, epoch: int,
                    show_progress: bool = True, channels_last: bool = False, amp: bool = True) -> dict:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    wait = 0.0
    start = tick = time.perf_counter()
    for images, labels in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not show_progress):
        wait += time.perf_counter() - tick
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # accumulated on the device: a .item() per step would make the CPU wait for the GPU every step
        total_loss += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        tick = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total_loss, correct = float(total_loss), int(correct)
    elapsed = time.perf_counter() - start
    return {"train_loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "images_per_s": seen / elapsed, "data_wait_fraction": wait / elapsed}


@torch.inference_mode()
def predict_probs(model: nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, P(malignant), mean cross-entropy) over a loader, in loader order."""
    model.eval()
    labels_all, probs_all, loss_sum = [], [], 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with autocast(device):
            logits = model(images).float()
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        probs_all.append(logits.softmax(1)[:, 1].cpu())
        labels_all.append(labels.cpu())
    y = torch.cat(labels_all).numpy()
    return y, torch.cat(probs_all).numpy(), loss_sum / max(len(y), 1)
