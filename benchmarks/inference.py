"""Inference benchmark: one slice → probabilities + CAM + overlay, against a plain forward pass.

    python benchmarks/inference.py [--threads 2] [--runs 50] [--weights weights] [--image examples/x.png]

All figures are medians (p50) over --runs timed runs after warm-up, measured in this one run, so the
ratios hold on a noisy machine even when the milliseconds do not. The process uses the app's OpenMP spin
(tumortrace.openmp) and glibc malloc settings (tumortrace.malloc): with glibc's defaults some processes
fault every forward pass's buffers in again and time ~1.3× slower than others. The last line is
``predict+cam/forward ratio: X.XX`` for the shipped model that is slowest as the app serves it (BatchNorm
folded, TorchScript trunk): the app's path against a plain forward of that same served model, each timed in
its own steady state (every timed run right after a run of its own; blocks of the two alternating:
``timed_in_blocks``).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import machine  # noqa: E402
from tumortrace import openmp  # noqa: E402

SPIN = openmp.shorten_spin()  # as the app does: before torch loads libgomp

import torch  # noqa: E402

from tumortrace.cam import gradcam_reference, overlay, predict_with_cam  # noqa: E402
from tumortrace.checkpoint import load  # noqa: E402
from tumortrace.fusion import fused_for_inference, is_scripted  # noqa: E402
from tumortrace.images import load_image  # noqa: E402
from tumortrace.inference import display_pixels  # noqa: E402
from tumortrace.malloc import describe, tune_for_serving  # noqa: E402
from tumortrace.preprocess import model_input  # noqa: E402
from tumortrace.registry import model_folders  # noqa: E402
from tumortrace.scripted import script_trunk  # noqa: E402


def timed_alternating(fns, runs: int, warmup: int = 5) -> tuple[dict, ...]:
    """Run the functions in turn, run by run, so drifts of a noisy machine hit all of them alike."""
    _warm_up(fns, warmup)
    samples = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, samples):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return tuple(_p50_p95(s) for s in samples)


def timed_in_blocks(fns, runs: int, block: int = 5, warmup: int = 5) -> tuple[dict, ...]:
    """Each function in blocks of ``block`` timed runs after one untimed run, the blocks alternating: every timed
    run comes right after a run of the same function (its own steady state, as in a loop of its own) and drifts
    of a noisy machine hit all of them alike.

    Run by run in turn, the forward ran right after the app's path: the OpenMP workers asleep since the
    overlay's ~1 ms without torch (a forward after 1 ms of Python: +0.06 ms), the caches full of the overlay's
    images; for Lite0 0.2 ms slower than right after a forward (5.41 against 5.26 ms). The app's path starts
    with the preprocessing's resize, which wakes them, and costs the same after itself as after a forward.
    """
    _warm_up(fns, warmup)
    samples = [[] for _ in fns]
    while len(samples[0]) < runs:
        for fn, out in zip(fns, samples):
            fn()
            for _ in range(block):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
    return tuple(_p50_p95(s) for s in samples)


def timed(fn, runs: int, warmup: int = 5) -> dict:
    _warm_up((fn,), warmup)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return _p50_p95(samples)


def _warm_up(fns, rounds: int) -> None:
    for _ in range(rounds):
        for fn in fns:
            fn()


def _p50_p95(seconds: list[float]) -> dict:
    """Timings in seconds → their p50 and p95 in ms."""
    ordered = sorted(seconds)
    return {"p50": statistics.median(ordered) * 1e3, "p95": ordered[int(0.95 * (len(ordered) - 1))] * 1e3}


def matmul_gflops(threads: int, n: int = 2048, runs: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = timed(lambda: a @ b, runs, warmup=3)["p50"] / 1e3
    return 2 * n**3 / t / 1e9


def forward_flops(model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops()


def cold_start_s() -> float:
    """A new process: import the app (torch, gradio) and load every shipped model, i.e. until it can serve
    (scikit-learn, for the threshold table, is imported after that: ``app.import_after_start``)."""
    code = ("import time; t=time.perf_counter(); import app; from tumortrace.registry import build_registry; "
            "r=build_registry(); assert r.models, r.errors; print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def app_path(model, pixels, rgb) -> None:
    """The app's path: preprocess, one forward for probabilities and CAM, overlay (``rgb``: as the app shows the
    slice, ``tumortrace.inference.display_pixels``)."""
    _, cam = predict_with_cam(model, model_input(pixels, model.image_size, model.mean, model.std))
    overlay(rgb, cam)


def bench_model(name: str, loaded, served, image, runs: int, threads: int) -> dict:
    """``loaded``: the checkpoint as trained; ``served``: the model as the app serves it."""
    torch.set_num_threads(threads)
    model = loaded.model.eval()
    folded = fused_for_inference(model, torchscript=False)  # BatchNorm folded alone: the eager trunk
    size, mean, std = model.image_size, model.mean, model.std
    x = model_input(image.pixels, size, mean, std)
    rgb = display_pixels(image)  # as the app: one channel for a gray slice

    def forward_no_grad():
        with torch.no_grad():
            model(x)

    def folded_forward_no_grad():
        with torch.no_grad():
            folded(x)

    def served_forward_no_grad():
        with torch.no_grad():
            served(x)

    def forward_inference_mode():
        with torch.inference_mode():
            model(x)

    def baseline():  # what a seed user writes: preprocess, forward, then grad-cam (forward + backward)
        xi = model_input(image.pixels, size, mean, std)
        with torch.no_grad():
            model(xi).softmax(1)
        _, cam = gradcam_reference(model, xi)
        overlay(rgb, cam)

    def fast():
        app_path(served, image.pixels, rgb)

    # The served trunk against the same frozen trunk made the way this project served it before
    # (optimize_for_inference instead of the oneDNN Graph fuser), in the same alternating loop.
    ofi_trunk = script_trunk(served.features.eager, x, onednn_graph=False) if is_scripted(served) else None

    def served_trunk():
        with torch.no_grad():
            served.features(x)

    def ofi_trunk_run():
        with torch.no_grad():
            ofi_trunk(x)

    # Where the app's path goes beyond the forward: its parts, each timed in a loop of its own alternation
    # (each part runs with caches as another part left them, as in the app).
    _, cam = predict_with_cam(served, x)

    def preprocess():
        model_input(image.pixels, size, mean, std)

    def forward_and_cam():
        predict_with_cam(served, x)

    def overlay_only():
        overlay(rgb, cam)

    parts = dict(zip(("served forward", "preprocess", "forward + CAM", "overlay"), (
        timed_alternating((served_forward_no_grad, preprocess, forward_and_cam, overlay_only), runs))))

    row = {"model": name, "flops": forward_flops(model, x), "parts": parts,
           "trunk": served.features.optimisation if ofi_trunk is not None else "eager"}
    row["forward"], row["forward_folded"], row["forward_served"], row["trunk_served"], row["trunk_ofi"] = (
        timed_alternating((forward_no_grad, folded_forward_no_grad, served_forward_no_grad, served_trunk,
                           ofi_trunk_run if ofi_trunk is not None else served_trunk), runs))
    # The app's path against the served forward, each timed right after a run of its own (timed_in_blocks). In
    # the loop above the served forward runs right after the eager one, whose other weights it then reads from
    # memory (for Lite0 ~0.8 ms slower, the ratio ~0.07 low); run by run in turn with the app's path it ran after
    # the overlay (~0.2 ms slower, the ratio ~0.05 low): benchmarks/HISTORY.md, eighth and ninth sessions.
    row["forward_served_blocks"], row["fast"] = timed_in_blocks((served_forward_no_grad, fast), runs)
    row["forward_inference_mode"] = timed(forward_inference_mode, runs)
    row["baseline"] = timed(baseline, runs)
    model_cl = model.to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)

    def forward_cl():
        with torch.inference_mode():
            model_cl(xcl)
    row["forward_channels_last"] = timed(forward_cl, runs)
    model.to(memory_format=torch.contiguous_format)
    torch.set_num_threads(1)
    row["forward_1_thread"] = timed(forward_inference_mode, max(runs // 2, 10))
    torch.set_num_threads(threads)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per measurement (default: 50)")
    p.add_argument("--weights", type=Path, default=ROOT / "weights", help="folder of model folders (default: weights)")
    p.add_argument("--image", type=Path, default=None, help="input slice (default: first file in examples/)")
    p.add_argument("--no-cold-start", action="store_true", help="skip the app cold-start measurement (default: run it)")
    args = p.parse_args()

    allocator = describe(tune_for_serving())  # as the app's log line says it
    image_path = args.image or sorted(p for p in (ROOT / "examples").glob("*.png"))[0]
    image = load_image(image_path)
    folders = model_folders(args.weights)
    print(f"# {machine.describe()}, torch {torch.__version__}, {args.threads} threads, "
          f"{args.runs} runs, image {image_path.name} {image.size[0]}×{image.size[1]}, {allocator}, "
          f"{openmp.describe(SPIN)}, {time.strftime('%Y-%m-%d')}")
    gflops = matmul_gflops(args.threads)
    print(f"sustained fp32 matmul (2048²): {gflops:.1f} GFLOP/s")
    rows = []
    for folder in folders:
        t = time.perf_counter()
        loaded = load(str(folder))  # as the app loads it (load(..., for_inference=True)): verify, then fold, script
        served = fused_for_inference(loaded.model)
        load_s = time.perf_counter() - t
        row = bench_model(folder.name, loaded, served, image, args.runs, args.threads)
        row["load_s"] = load_s
        rows.append(row)
    print()
    print("| model | GFLOPs | floor ms | forward ms | inference_mode | channels_last | 1 thread | BN folded "
          "| served (folded + TorchScript) | served/forward | baseline (fwd + grad-cam) "
          "| app path (served fwd + CAM + overlay) | baseline/forward "
          "| served forward, in blocks alternating with the app path's "
          "| app path/served forward (blocks) | app path/forward "
          "| load s (as served) | served trunk | its trunk ms | optimize_for_inference trunk ms | trunk ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, folded, served = r["forward"]["p50"], r["forward_folded"]["p50"], r["forward_served"]["p50"]
        print(f"| {r['model']} | {r['flops'] / 1e9:.2f} | {r['flops'] / 1e9 / gflops * 1e3:.1f} | {f:.1f} | "
              f"{r['forward_inference_mode']['p50']:.1f} | {r['forward_channels_last']['p50']:.1f} | "
              f"{r['forward_1_thread']['p50']:.1f} | {folded:.1f} | {served:.1f} | {served / f:.2f} | "
              f"{r['baseline']['p50']:.1f} (p95 {r['baseline']['p95']:.1f}) | "
              f"{r['fast']['p50']:.1f} (p95 {r['fast']['p95']:.1f}) | {r['baseline']['p50'] / f:.2f} | "
              f"{r['forward_served_blocks']['p50']:.1f} | "
              f"{r['fast']['p50'] / r['forward_served_blocks']['p50']:.2f} | "
              f"{r['fast']['p50'] / f:.2f} | {r['load_s']:.2f} | {r['trunk']} | "
              f"{r['trunk_served']['p50']:.1f} | {r['trunk_ofi']['p50']:.1f} | "
              f"{r['trunk_served']['p50'] / r['trunk_ofi']['p50']:.2f} |")
    print()
    for r in rows:
        print(f"{r['model']}, the app path's parts (p50 ms, alternating): "
              + ", ".join(f"{k} {v['p50']:.2f}" for k, v in r["parts"].items()))
    print(f"\npeak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if not args.no_cold_start:
        print(f"app cold start (new process: imports + load all models): {cold_start_s():.1f} s")
    slowest = max(rows, key=lambda r: r["forward_served"]["p50"])  # slowest as the app serves it
    print(f"slowest model: {slowest['model']}")
    # Like for like: the app's path against a plain forward of the same served model, so the ratio is the
    # cost of the CAM and overlay alone; against the checkpoint as trained it is the 'app path/forward' column.
    print(f"predict+cam/forward ratio: {slowest['fast']['p50'] / slowest['forward_served_blocks']['p50']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
