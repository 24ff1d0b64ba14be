"""Train a benign/malignant slice classifier and evaluate it on a held-out test split.

    python training/train.py --data PATH --arch efficientnet_lite0 --out weights/NAME --pretrained

Writes into --out: config.json, model.safetensors, evaluation.json, history.json, split.json, roc.png,
confusion_matrix.png, curves.png, README.md (model card), and resume_state.pt (not published).
Runs under ``torchrun --nproc_per_node=N`` with DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumortrace import CLASSES, plots  # noqa: E402
from tumortrace.checkpoint import (RESUME_NAME, atomic_write_text, load_model, load_resume_state,  # noqa: E402
                                   save_model, save_resume_state)
from tumortrace.data import DataError, SliceDataset, decode_all, discover  # noqa: E402
from tumortrace.engine import (EarlyStopping, all_reduce_mean, init_distributed, learning_rate,  # noqa: E402
                               predict_probs, rng_state, seed_everything, select_device, set_rng_state, sync_buffers,
                               train_one_epoch)
from tumortrace.evaluate import evaluate_images, write_evaluation  # noqa: E402
from tumortrace.gpu_augment import DeviceBatches, GpuAugment  # noqa: E402
from tumortrace.metrics import binary_metrics, threshold_for_sensitivity  # noqa: E402
from tumortrace.models import ARCHS, PretrainedUnavailable, TumorClassifier, load_imagenet_trunk  # noqa: E402
from tumortrace.preprocess import eval_transform, normalize, train_transform  # noqa: E402
from tumortrace.split import assign_splits, hash_groups, kfold_split, save_split  # noqa: E402

log = logging.getLogger("train")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", required=True, help="data folder: manifest.csv, <class>/ folders, or train/val/test/<class>/")
    a("--arch", default="efficientnet_lite0", choices=ARCHS, help="architecture (default: efficientnet_lite0)")
    a("--out", required=True, help="output folder for the checkpoint and its evaluation")
    a("--epochs", type=int, default=50, help="maximum epochs (default: 50)")
    a("--patience", type=int, default=5, help="early-stopping patience in epochs (default: 5)")
    a("--min-delta", type=float, default=0.0, help="smallest improvement that counts (default: 0.0)")
    a("--monitor", default="val_loss", choices=("val_loss", "val_auc"), help="early-stopping metric (default: val_loss)")
    a("--batch-size", type=int, default=32, help="images per step and process (default: 32)")
    a("--image-size", type=int, default=224, help="input size in pixels, square (default: 224)")
    a("--opt", default="adamw", choices=("adamw", "sgd"), help="optimizer (default: adamw)")
    a("--lr", type=float, default=None, help="learning rate (default: 3e-4 for adamw, 0.01 for sgd)")
    a("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    a("--weight-decay", type=float, default=1e-4, help="weight decay (default: 1e-4)")
    a("--lr-scheduler", default="cosine", choices=("cosine", "step", "none"), help="LR schedule (default: cosine)")
    a("--balance", default="weighted-loss", choices=("weighted-loss", "sampler", "none"),
      help="class-imbalance handling (default: weighted-loss)")
    a("--label-smoothing", type=float, default=0.0, help="label smoothing (default: 0.0)")
    a("--random-erasing", type=float, default=0.0,
      help="probability of erasing a random rectangle of each training image (default: 0.0)")
    a("--split", default="0.7,0.15,0.15", help="train,val,test fractions (default: 0.7,0.15,0.15)")
    a("--target-sensitivity", type=float, default=0.90,
      help="the validated threshold is the highest reaching this validation sensitivity (default: 0.90)")
    a("--seed", type=int, default=0, help="random seed for init, order and augmentation (default: 0)")
    a("--split-seed", type=int, default=None, help="random seed for the train/val/test split (default: --seed)")
    a("--folds", type=int, default=None,
      help="cross-validation: K grouped, stratified folds instead of --split; test = fold --fold, val = the next "
           "fold, train = the rest (default: off)")
    a("--fold", type=int, default=0, help="which fold is the test fold with --folds, 0-based (default: 0)")
    a("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    a("--workers", type=int, default=None,
      help="data-loader worker processes (default: 0 on CPU, where workers steal the compute cores; 4 on CUDA)")
    a("--threads", type=int, default=0, help="torch CPU threads, 0 = torch's choice (default: 0)")
    a("--amp", default="bf16", choices=("bf16", "off"), help="mixed precision on CUDA; CPU always runs fp32 "
                                                            "(default: bf16)")
    a("--augment-on", default="auto", choices=("auto", "cpu", "gpu"),
      help="where training augmentation runs: cpu = DataLoader workers, gpu = whole batches on the GPU with "
           "the cached images held there; auto = gpu when training on CUDA (default: auto)")
    a("--channels-last", action="store_true", help="channels_last memory format (default: off)")
    a("--compile", action="store_true", help="torch.compile the training model (default: off)")
    a("--skip-test", action="store_true",
      help="model selection run: save the model and validation metrics but do not touch the test split; "
           "evaluate the chosen model later with python -m tumortrace.evaluate --write (default: off)")
    pre = p.add_mutually_exclusive_group()
    pre.add_argument("--pretrained", dest="pretrained", action="store_true", default=True,
                     help="start from ImageNet weights; stop if they cannot be had (default)")
    pre.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                     help="train from scratch, on purpose")
    a("--pretrained-weights", default=None, help="ImageNet weights file for the trunk (default: download or bundled)")
    a("--modality", default="unspecified", help="imaging modality of the data, written to config and card "
                                                "(default: unspecified)")
    a("--data-name", default=None, help="name and citation of the training data for config and card "
                                        "(default: the data folder's name)")
    a("--resume", action="store_true", help="continue from OUT/resume_state.pt (default: off)")
    a("--bootstrap", type=int, default=1000, help="bootstrap resamples for test CIs (default: 1000)")
    a("--no-progress", action="store_true", help="no tqdm progress bars (default: shown)")
    a("--stop-after-epochs", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a kill
    return p


def prepare_data(args, is_main: bool):
    root = Path(args.data)
    samples = discover(root)
    images, samples = decode_all(samples, args.image_size)
    if all(s.group for s in samples):
        grouping = "duplicate_group column of manifest.csv"
    else:
        for s, g in zip(samples, hash_groups(images)):
            s.group = s.group or g
        grouping = "perceptual hash (dHash, ≤6 of 64 bits)"
    fractions = tuple(float(x) for x in args.split.split(","))
    split_seed = args.seed if args.split_seed is None else args.split_seed
    if args.folds:
        if all(s.split for s in samples):
            raise DataError("--folds needs data without a given split (manifest split column or split folders)")
        split = kfold_split(samples, args.folds, args.fold, split_seed)
        meta = {"seed": split_seed, "folds": args.folds, "fold": args.fold, "grouping": grouping}
    else:
        split = assign_splits(samples, fractions, split_seed)
        meta = {"seed": split_seed, "fractions": fractions, "grouping": grouping}
    if is_main:
        save_split(Path(args.out) / "split.json", root, samples, split, meta)
    for name, idx in split.items():
        counts = [sum(samples[i].label == c for i in idx) for c in range(len(CLASSES))]
        log.info("%s: %d images (benign %d, malignant %d)", name, len(idx), *counts)
    return root, images, samples, split


def make_loaders(args, model, images, samples, split, dist_info):
    labels = [s.label for s in samples]
    tr, ev = (train_transform(model.image_size, model.mean, model.std, args.random_erasing),
              eval_transform(model.image_size, model.mean, model.std))

    def subset(name, transform):
        idx = split[name]
        return SliceDataset(images[idx], [labels[i] for i in idx], transform)

    train_set = subset("train", tr)
    counts = torch.bincount(train_set.labels, minlength=2).float()
    sampler = None
    if dist_info.enabled:
        if args.balance == "sampler":
            raise DataError("--balance sampler cannot be combined with torchrun; use --balance weighted-loss")
        sampler = DistributedSampler(train_set, dist_info.world_size, dist_info.rank, shuffle=True, seed=args.seed)
    elif args.balance == "sampler":
        weights = (1.0 / counts)[train_set.labels]
        sampler = WeightedRandomSampler(weights, len(train_set), replacement=True)
    device = next(model.parameters()).device
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    # persistent: re-spawning workers every epoch costs seconds, which on a GPU is a whole small epoch
    kw = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    drop_last = len(train_set) > args.batch_size
    if args.augment_on == "gpu":  # resolved from auto/cpu/gpu by augment_on_gpu in main
        train_loader = DeviceBatches(train_set.images.to(device), train_set.labels, args.batch_size,
                                     GpuAugment(model.image_size, model.mean, model.std,
                                                erasing=args.random_erasing), sampler, drop_last,
                                     # on an H100 the side stream cut ResNet18's data wait at batch 128 from
                                     # 3.6-13.5% to 1.8-3.5%; with torch.compile it made it worse (benchmarks/HISTORY.md)
                                     side_stream=not args.compile)
    else:
        train_loader = DataLoader(train_set, args.batch_size, shuffle=sampler is None, sampler=sampler,
                                  drop_last=drop_last, **kw)
    val_loader = DataLoader(subset("val", ev), args.batch_size, shuffle=False, **kw)
    class_weights = (counts.sum() / (2 * counts)) if args.balance == "weighted-loss" else None
    return train_loader, val_loader, class_weights, sampler


def augment_on_gpu(args, device: torch.device) -> bool:
    if args.augment_on == "gpu" and device.type != "cuda":
        raise DataError("--augment-on gpu needs training on a CUDA GPU")
    return args.augment_on == "gpu" or (args.augment_on == "auto" and device.type == "cuda")


def build_model(args) -> TumorClassifier:
    model = TumorClassifier(arch=args.arch, image_size=args.image_size, modality=args.modality,
                            training_data=args.data_name or Path(args.data).resolve().name)
    if args.pretrained:
        model.init_source = load_imagenet_trunk(model, args.pretrained_weights)
    else:
        model.init_source = "random init (--no-pretrained)"
        log.warning("training %s from scratch (--no-pretrained)", args.arch)
    return model


def make_optimizer(args, model, steps_per_epoch):
    lr = learning_rate(args.opt, args.lr)
    if args.opt == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.lr_scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(args.epochs, 1))
    elif args.lr_scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(args.epochs // 3, 1), gamma=0.1)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


FP16_TOLERANCE = 1e-3


def save_checked(model, out: Path, val_images: torch.Tensor):
    """Save fp16 weights if they keep every validation probability within 1e-3 of fp32, else fp32.

    Returns the model as reloaded from disk (what ships) and the measured max difference.
    """
    x = normalize(val_images, model.mean, model.std)
    with torch.inference_mode():
        reference = model.eval()(x).softmax(1)
    for dtype in (torch.float16, torch.float32):
        save_model(model, out, dtype)
        shipped = load_model(out).model
        with torch.inference_mode():
            diff = (shipped(x).softmax(1) - reference).abs().max().item()
        if diff <= FP16_TOLERANCE:
            log.info("saved %s weights: max probability change vs fp32 %.2e", dtype, diff)
            return shipped, diff
        log.warning("%s weights change a validation probability by %.2e (> %.0e); saving fp32 instead",
                    dtype, diff, FP16_TOLERANCE)
    return shipped, diff


def finalize(args, model, images, samples, split, root, history, stopper, val_pred, init_source, diverged=None):
    """Pick the threshold on validation, save the weights, reload them, evaluate once on test.

    Returns the test report, or None with --skip-test (validation metrics go to history.json then).
    """
    out = Path(args.out)
    y_val, p_val = val_pred
    model.threshold = threshold_for_sensitivity(y_val, p_val, args.target_sensitivity)
    at_threshold = binary_metrics(y_val, p_val, model.threshold)
    model.threshold_rule = (f"highest threshold reaching validation sensitivity ≥ {args.target_sensitivity:.2f} "
                            f"(validation: {at_threshold['recall']:.3f} sensitivity, "
                            f"{at_threshold['specificity']:.3f} specificity)")
    shipped, diff = save_checked(model, out, images[split["val"]])
    summary = {"best_epoch": stopper.best_epoch, "epochs_run": len(history), "monitor": stopper.monitor,
               "best_value": stopper.best, "init": init_source, "device": args.device_name,
               "shipped_weights_max_prob_diff_vs_fp32": diff,
               "validation_at_threshold": {"threshold": model.threshold, **at_threshold},
               "validation_auc": binary_metrics(y_val, p_val, 0.5)["roc_auc"], "args": vars(args),
               "diverged": diverged}
    atomic_write_text(out / "history.json", json.dumps({"summary": summary, "epochs": history}, indent=1))
    plots.save(plots.curves_figure(history), out / "curves.png")
    if args.skip_test:
        log.info("--skip-test: validation ROC-AUC %.3f; at threshold %.3f sensitivity %.3f, specificity %.3f; "
                 "test split untouched", summary["validation_auc"], model.threshold, at_threshold["recall"],
                 at_threshold["specificity"])
        return None
    test = split["test"]
    report = evaluate_images(shipped, images[test], [samples[i] for i in test], [samples[i].group for i in test],
                             root, n_boot=args.bootstrap, seed=args.seed)
    report["evaluated_on"] = f"test split of split.json ({len(test)} images)"
    write_evaluation(out, report)
    v = report["thresholds"]["validated"]
    log.info("test (positive = malignant): ROC-AUC %.3f %s; at threshold %.3f sensitivity %.3f %s, "
             "specificity %.3f %s; Brier score %.3f (%.3f for a constant at the test's malignant fraction)",
             v["metrics"]["roc_auc"], v["ci95"]["roc_auc"], v["threshold"], v["metrics"]["recall"],
             v["ci95"]["recall"], v["metrics"]["specificity"], v["ci95"]["specificity"],
             report["calibration"]["brier"], report["calibration"]["brier_constant"])
    return report


def main(args: argparse.Namespace) -> int:
    dist_info = init_distributed(args.device)
    device = select_device(args.device, dist_info.local_rank)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device_name = (f"{torch.cuda.get_device_name(device)} (CUDA)" if device.type == "cuda"
                        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    try:
        args.augment_on = "gpu" if augment_on_gpu(args, device) else "cpu"
        root, images, samples, split = prepare_data(args, dist_info.is_main)
        model = build_model(args)
        init_source = model.init_source
        model.to(device)
        train_loader, val_loader, class_weights, sampler = make_loaders(args, model, images, samples, split,
                                                                        dist_info)
    except (DataError, PretrainedUnavailable) as exc:
        log.error("%s", exc)
        return 2
    optimizer, scheduler = make_optimizer(args, model, len(train_loader))
    stopper = EarlyStopping(args.monitor, args.patience, args.min_delta)
    criterion = nn.CrossEntropyLoss(weight=None if class_weights is None else class_weights.to(device),
                                    label_smoothing=args.label_smoothing)
    history, start_epoch, best_state = [], 1, None
    resume_path = out / RESUME_NAME
    if args.resume and resume_path.is_file():
        state = load_resume_state(resume_path)
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stopping"])
        history, best_state, start_epoch = state["history"], state["best_model"], state["epoch"] + 1
        set_rng_state(state["rng"])
        log.info("resumed from %s after epoch %d", resume_path, state["epoch"])
    elif args.resume:
        log.info("--resume: no %s yet, starting fresh", resume_path)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    train_model = (nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                       else None) if dist_info.enabled else model)
    if args.compile:
        train_model = torch.compile(train_model)
    val_pred, diverged = None, None
    for epoch in range(start_epoch, args.epochs + 1):
        if stopper.should_stop:
            break
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        stats = train_one_epoch(train_model, train_loader, criterion, optimizer, device, epoch,
                                show_progress=dist_info.is_main and not args.no_progress,
                                channels_last=args.channels_last, amp=args.amp == "bf16")
        stats["train_loss"] = all_reduce_mean(stats["train_loss"], dist_info, device)
        if not math.isfinite(stats["train_loss"]):  # the same on every rank: all stop together
            diverged = {"epoch": epoch, "reason": f"training loss {stats['train_loss']}"}
            break
        scheduler.step()
        sync_buffers(model, dist_info)
        y_val, p_val, val_loss = predict_probs(model, val_loader, device)
        if not np.isfinite(p_val).all():
            diverged = {"epoch": epoch, "reason": "validation probabilities not finite"}
            break
        m = binary_metrics(y_val, p_val, 0.5)
        row = {"epoch": epoch, **stats, "val_loss": val_loss, "val_auc": m["roc_auc"], "val_accuracy": m["accuracy"],
               "val_sensitivity": m["recall"], "val_specificity": m["specificity"],
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        history.append(row)
        if stopper.step(val_loss if args.monitor == "val_loss" else m["roc_auc"], epoch):
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        log_main = log.info if dist_info.is_main else log.debug
        log_main("epoch %d: train loss %.4f acc %.3f | val loss %.4f AUC %.4f | %.0f img/s, data wait %.1f%% | %.0f s%s",
                 epoch, row["train_loss"], row["train_accuracy"], val_loss, m["roc_auc"], row["images_per_s"],
                 100 * row["data_wait_fraction"], row["seconds"], " *best" if stopper.best_epoch == epoch else "")
        if dist_info.is_main:
            save_resume_state(resume_path, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "early_stopping": stopper.state_dict(), "history": history,
                "best_model": best_state, "rng": rng_state(), "args": {k: str(v) for k, v in vars(args).items()}})
        if args.stop_after_epochs and epoch - start_epoch + 1 >= args.stop_after_epochs:
            log.info("stopping after %d epochs as asked", args.stop_after_epochs)
            return 0
    if diverged and best_state is None:
        log.error("epoch %d: training diverged (%s) before any epoch was validated, so no model is written; "
                  "try a lower --lr (this run: %g)", diverged["epoch"], diverged["reason"],
                  learning_rate(args.opt, args.lr))
        end_distributed(dist_info)
        return 1
    if diverged:
        # Its weights are lost (not finite); the last resume state, from the epoch before, is left as it was.
        log.error("epoch %d: training diverged (%s); stopping with the best epoch so far (%d), as early stopping "
                  "would; a lower --lr (this run: %g) may train further", diverged["epoch"], diverged["reason"],
                  stopper.best_epoch, learning_rate(args.opt, args.lr))
    elif stopper.should_stop:
        log.info("early stopping: no %s improvement for %d epochs; best epoch %d", stopper.monitor,
                 args.patience, stopper.best_epoch)
    if dist_info.is_main:
        if best_state is not None:
            model.load_state_dict(best_state, strict=True)
        model.cpu().to(memory_format=torch.contiguous_format)
        eval_loader = torch.utils.data.DataLoader(val_loader.dataset, args.batch_size)
        val_pred = predict_probs(model, eval_loader, torch.device("cpu"))[:2]
        finalize(args, model, images, samples, split, root, history, stopper, val_pred, init_source, diverged)
    end_distributed(dist_info)
    return 0


def end_distributed(dist_info) -> None:
    if dist_info.enabled:  # every rank gets here, --skip-test or not: rank 0 must not leave the others waiting
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
