"""Thread hops per prediction: what the server hands from its event loop to a worker thread and back.

    python benchmarks/hops.py [--requests 20] [--model weights/NAME]

Serves the app in this process as `python app.py` does (benchmarks/load.py's ``app_in_process``), sends
one-client predictions over raw HTTP as a browser does (upload, call, event stream, two image downloads),
and counts every ``anyio.to_thread.run_sync`` call during them by the function it runs. Each hop costs the
event loop's CPU and a wait for a worker thread to wake, on the cores that also run the model.
"""
from __future__ import annotations

import argparse
import collections
import uuid
from pathlib import Path

from serve_here import ROOT, work_folder  # before anything imports Gradio

import machine

WORK = work_folder("hops")  # the app's files and the clients', removed at the end


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20, help="predictions counted, after 3 of warm-up (default: 20)")
    p.add_argument("--model", default=str(ROOT / "weights" / "efficientnet_lite0_busi"),
                   help="model folder the app serves (default: weights/efficientnet_lite0_busi)")
    from load import exit_after_in_process_run
    exit_after_in_process_run(measure, p.parse_args(), WORK)


def measure(args) -> int:
    import httpx

    from apputil import thread_hops_counted
    from load import app_in_process, raw_http_request

    name, image = Path(args.model).name, sorted((ROOT / "examples").glob("busi_*.png"))[0]
    # Counting starts before Gradio is imported: its queue binds anyio's run_sync by name at import.
    with thread_hops_counted() as calls, httpx.Client(timeout=60) as http:
        url = app_in_process(args.model)
        session = uuid.uuid4().hex
        for _ in range(3):
            raw_http_request(http, url, image, name, session_hash=session)
        del calls[:]
        for _ in range(args.requests):
            raw_http_request(http, url, image, name, session_hash=session)
    counts = collections.Counter(calls)
    print(f"# {machine.describe()}; model {name}; {args.requests} one-client predictions over raw HTTP "
          f"({image.name}); hops per request")
    print("| hops | function run in a worker thread |\n|---|---|")
    for function, n in counts.most_common():
        print(f"| {n / args.requests:g} | `{function}` |")
    print(f"thread hops per prediction: {sum(counts.values()) / args.requests:g}")
    return 0


if __name__ == "__main__":
    main()
