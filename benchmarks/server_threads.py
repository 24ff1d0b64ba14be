"""Where the server's CPU goes per request: the prediction's threads against Gradio's event loop.

    python benchmarks/server_threads.py [--clients 1 8] [--seconds 30]

Runs the app in this process (as benchmarks/trace_memory.py does), drives it with gradio_client threads, and
reads every thread's CPU time (user + system, /proc/self/task; Linux) before and after each phase. Server
threads are grouped by what they run: the event loop (the thread whose stack is in uvicorn: HTTP, Gradio's
queue and pre/post-processing, the event stream, file downloads), the handlers (AnyIO worker threads: decode,
model, CAM, overlay, the overlay's JPEG; and tumortrace-lone, where a prediction that runs alone runs, and an
upload classified ahead once its model's copy for that is built: tumortrace/lone.py), the slice's PNG encoder
(tumortrace-encode), uploads decoded as they arrive (tumortrace-decode; otherwise their handler decodes them)
and classified then while the app is idle (tumortrace-ahead; gradio_client's uploads, each followed at once by
its call, never are), and threads without a Python name (torch's OpenMP pool). The clients' threads (this
script's) are left out.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import Counter
from pathlib import Path

from serve_here import ROOT, work_folder  # before anything imports Gradio

import machine

WORK = work_folder("threads")  # the app's files and the clients', removed at the end

EVENT_LOOP, HANDLERS, ENCODER, DECODER, NATIVE, CLIENTS = (
    "event loop (uvicorn + Gradio)", "handlers (AnyIO workers, the lone prediction's)", "slice PNG encoder",
    "uploads decoded (and classified) on arrival",
    "no Python name (torch/OpenMP)", "clients (not the server)")
GROUPS = (EVENT_LOOP, HANDLERS, ENCODER, DECODER, NATIVE)


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds of every thread of this process, by native thread id."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended: before the open, or between open and read
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def thread_groups() -> dict[int, str]:
    """Native thread id → group, from each Python thread's name and current stack."""
    frames, groups = sys._current_frames(), {}
    for t in threading.enumerate():
        frame, in_uvicorn = frames.get(t.ident), False
        while frame is not None and not in_uvicorn:
            in_uvicorn = "uvicorn" in frame.f_code.co_filename
            frame = frame.f_back
        if in_uvicorn:
            group = EVENT_LOOP
        elif t.name.startswith(("AnyIO", "tumortrace-lone")):
            group = HANDLERS
        elif t.name.startswith("tumortrace-encode"):
            group = ENCODER
        elif t.name.startswith(("tumortrace-decode", "tumortrace-ahead")):
            group = DECODER
        else:
            group = CLIENTS  # this script's main thread, load-client-*, gradio_client's pools
        groups[t.native_id] = group
    return groups


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="clients per phase (default: 1 8)")
    p.add_argument("--seconds", type=float, default=30, help="length of one phase (default: 30)")
    p.add_argument("--model", default=str(ROOT / "weights" / "efficientnet_lite0_busi"),
                   help="model folder (default: weights/efficientnet_lite0_busi)")
    args = p.parse_args()
    from load import exit_after_in_process_run

    exit_after_in_process_run(measure, args, WORK)


def measure(args) -> int:
    if not Path("/proc/self/task").is_dir():
        print("needs Linux (/proc/self/task)", file=sys.stderr)
        return 2

    from load import app_in_process, run_clients, summarize

    url, name = app_in_process(args.model), Path(args.model).name
    valid = sorted((ROOT / "examples").glob("busi_*.png"))
    run_clients(url, max(args.clients), 8, valid, [], name)  # warm-up: every handler thread exists after it
    print(f"# {machine.describe()}; model {name}; {args.seconds:.0f} s per phase; server CPU ms per request, "
          "by thread group")
    print(f"| clients | requests | req/s | {' | '.join(GROUPS)} | server total | event loop share |\n"
          f"|---|---|---|{'---|' * len(GROUPS)}---|---|")
    for n in args.clients:
        before = thread_cpu_s()
        results, wall, _ = run_clients(url, n, args.seconds, valid, [], name)
        after, groups = thread_cpu_s(), thread_groups()  # groups read after: the handler threads all exist
        per_group = Counter()
        for tid, cpu in after.items():
            per_group[groups.get(tid, NATIVE)] += cpu - before.get(tid, 0.0)
        ms = {g: per_group[g] / len(results) * 1e3 for g in GROUPS}
        total, summary = sum(ms.values()), summarize(results, wall)
        errors = len(summary["unexpected"])
        print(f"| {n} | {len(results)} | {summary['throughput_per_s']:.1f} | "
              f"{' | '.join(f'{ms[g]:.1f}' for g in GROUPS)} | {total:.1f} | "
              f"{ms[EVENT_LOOP] / total:.0%} |" + (f" ({errors} errors)" if errors else ""), flush=True)
    return 0


if __name__ == "__main__":
    main()
