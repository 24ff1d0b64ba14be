"""libgomp's spin after a parallel region, and what it costs the app's path: its default against the app's.

    python benchmarks/openmp_spin.py [--rounds 3] [--runs 50] [--threads 2] [--weights weights]

libgomp reads GOMP_SPINCOUNT once, when torch loads it, so each setting needs a process of its own. Each
round runs one per setting, alternating: ``GOMP_SPINCOUNT=300000`` (libgomp's own default, named so that
``tumortrace.openmp`` leaves it) and the app's (``tumortrace.openmp.SPIN_COUNT``). Each process reports

- the CPU time the worker threads burn after one parallel region (a 512² matmul) while the caller sleeps
  50 ms (``tumortrace.openmp.idle_worker_cpu_ms``, median of 20), i.e. how long they spin before sleeping;
- for every shipped model, as served: a plain forward and the app's path (preprocess, forward + CAM,
  overlay), each timed right after a run of its own in alternating blocks, p50 over --runs, and their ratio
  (``benchmarks/inference.py``'s last line, for every model).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import machine

ROOT = Path(__file__).resolve().parents[1]
LIBGOMP_DEFAULT = 300_000  # libgomp's GOMP_SPINCOUNT when neither it nor OMP_WAIT_POLICY is set


def child(runs: int, threads: int, weights: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch

    from inference import app_path, timed_in_blocks
    from tumortrace.checkpoint import load
    from tumortrace.fusion import fused_for_inference
    from tumortrace.images import load_image
    from tumortrace.inference import display_pixels
    from tumortrace.malloc import tune_for_serving
    from tumortrace.openmp import idle_worker_cpu_ms
    from tumortrace.preprocess import model_input
    from tumortrace.registry import model_folders

    tune_for_serving()
    torch.set_num_threads(threads)
    out = {"spin_count": os.environ["GOMP_SPINCOUNT"], "worker_spin_ms": idle_worker_cpu_ms(), "models": {}}
    image = load_image(sorted((ROOT / "examples").glob("*.png"))[0])
    rgb = display_pixels(image)
    for folder in model_folders(weights):
        model = fused_for_inference(load(str(folder)).model)  # as inference.py serves it
        x = model_input(image.pixels, model.image_size, model.mean, model.std)

        def forward():
            with torch.no_grad():
                model(x)

        fwd, app = timed_in_blocks((forward, lambda: app_path(model, image.pixels, rgb)), runs)
        out["models"][folder.name] = {"forward": fwd["p50"], "app": app["p50"], "ratio": app["p50"] / fwd["p50"]}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="processes per setting, alternating (default: 3)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per measurement (default: 50)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--weights", type=Path, default=ROOT / "weights", help="folder of model folders (default: weights)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.runs, args.threads, args.weights)))
        return 0

    sys.path.insert(0, str(ROOT))
    from tumortrace.openmp import SPIN_COUNT

    settings = {f"libgomp's default ({LIBGOMP_DEFAULT})": LIBGOMP_DEFAULT, f"the app's ({SPIN_COUNT})": SPIN_COUNT}
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    print(f"# {machine.describe()}, {args.threads} torch threads, {args.runs} runs, {args.rounds} rounds, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| GOMP_SPINCOUNT | round | worker spin after a region ms | model | forward ms | app path ms | app path/forward |")
    print("|---|---|---|---|---|---|---|")
    results = {name: [] for name in settings}
    for k in range(args.rounds):
        for name, count in settings.items():
            done = subprocess.run([sys.executable, __file__, "--child", "--runs", str(args.runs), "--threads",
                                   str(args.threads), "--weights", str(args.weights.resolve())],
                                  env=dict(env, GOMP_SPINCOUNT=str(count)), cwd=ROOT, capture_output=True, text=True,
                                  check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results[name].append(r)
            for model, m in r["models"].items():
                print(f"| {name} | {k + 1} | {r['worker_spin_ms']:.2f} | {model} | {m['forward']:.2f} | "
                      f"{m['app']:.2f} | {m['ratio']:.2f} |")
    print()
    for name, rs in results.items():
        spin = statistics.median(r["worker_spin_ms"] for r in rs)
        ratios = {model: statistics.median(r["models"][model]["ratio"] for r in rs) for model in rs[0]["models"]}
        print(f"{name}: worker spin {spin:.2f} ms; median app path/forward "
              + ", ".join(f"{model} {v:.2f}" for model, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
