"""Where does the app's memory go under load? Python allocations (tracemalloc) against the process's RSS.

    python benchmarks/trace_memory.py [--clients 8] [--seconds 60] [--rounds 3]

Runs the app in this process (same handler code and malloc-arena cap as `python app.py`) and drives it
with gradio_client threads from the same process, then prints per round: RSS growth since the warm-up,
memory held by Python objects (tracemalloc), and the allocation sites that grew most. RSS here includes
the clients; what matters is the gap: growth that tracemalloc does not see is native (allocator
fragmentation, torch/numpy buffers), not Python objects kept alive.
"""
from __future__ import annotations

import argparse
import tracemalloc
from pathlib import Path

from serve_here import ROOT, work_folder  # before anything imports Gradio

WORK = work_folder("trace")  # the app's files and the clients', removed at the end


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8, help="concurrent gradio_client threads (default: 8)")
    p.add_argument("--seconds", type=float, default=60, help="length of one round (default: 60)")
    p.add_argument("--rounds", type=int, default=3, help="rounds after the warm-up (default: 3)")
    p.add_argument("--model", default=str(ROOT / "weights" / "efficientnet_lite0_busi"),
                   help="model folder (default: weights/efficientnet_lite0_busi)")
    p.add_argument("--top", type=int, default=5, help="allocation sites to list per round (default: 5)")
    args = p.parse_args()
    from load import exit_after_in_process_run

    exit_after_in_process_run(measure, args, WORK)


def measure(args) -> int:
    import psutil

    from load import app_in_process, run_clients

    url, name = app_in_process(args.model), Path(args.model).name
    valid = sorted((ROOT / "examples").glob("busi_*.png"))
    me = psutil.Process()
    run_clients(url, args.clients, 8, valid, [], name)  # warm-up, as benchmarks/load.py
    tracemalloc.start(8)
    base, rss0 = tracemalloc.take_snapshot(), me.memory_info().rss
    for r in range(1, args.rounds + 1):
        results, _, _ = run_clients(url, args.clients, args.seconds, valid, [], name)
        traced = tracemalloc.get_traced_memory()[0]
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        print(f"round {r}: {len(results)} requests; RSS {(me.memory_info().rss - rss0) / 2**20:+.0f} MiB since the "
              f"warm-up; Python objects traced {traced / 2**20:.1f} MiB", flush=True)
        for stat in snap.compare_to(base, "lineno")[:args.top]:
            print(f"  {stat.size_diff / 2**20:+6.2f} MiB {stat.count_diff:+7d} blocks  {stat.traceback[0]}")
    return 0


if __name__ == "__main__":
    main()
