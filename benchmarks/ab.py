"""A/B of two app servers running at the same time, so the machine's drift hits both alike.

    python benchmarks/ab.py --b-args="--no-torchscript" [--b-root ../old-checkout] [--b-env KEY=VALUE ...]
                            [--pairs 100] [--click-after 0] [--clients 8 --seconds 20 --rounds 6]
                            [--idle-seconds 10] [--b-first]

A is `python app.py` of this checkout with --a-args; B is app.py of --b-root (default: this checkout) with
--b-args, and --b-env added to its environment (e.g. PYTHONPATH=DIR to shadow an installed package). Whole
benchmark runs one after the other cannot separate a 10 ms change on these shared machines (the server's
CPU time per request moved 79–100 ms between runs of the same code), so:

- one client: raw-HTTP requests alternate between A and B (order swapped every pair); prints each side's
  p50 round trip and the median of the per-pair ratios B/A (with --click-after S, each call S seconds
  after its upload, as a person clicks Classify, timed from the click to the images);
- N clients (gradio_client threads): phases of --seconds alternate between A and B (order swapped every
  round); prints each side's throughput per phase, median throughput, server CPU per request and p50/p95;
- idle: both servers' CPU over one window in which nobody uses either.

Each server sits idle while the other is measured: ~0.3% of one core for this app, ~5% for one with
Gradio's own queue loops (they poll every millisecond), which then costs the measured side a little.

The server started second was 1–3% faster in A/A runs (same code both sides, one client: B/A 0.972 and
0.990 with A started first, 1.008 and 1.011 with --b-first). For a one-client figure finer than that, run
both orders and take the geometric mean of the two B/A ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import machine  # noqa: E402
from apputil import client_files_in, running_app, serving_line  # noqa: E402
from load import cpu_seconds, raw_http_request, run_clients, summarize  # noqa: E402


def one_client_pairs(urls: dict[str, str], image: Path, model_name: str, pairs: int, warmup: int = 5,
                     click_after_s: float = 0.0) -> dict:
    """With ``click_after_s``, each call waits that long after its upload and is timed from the call to the
    images (benchmarks/load.py's raw_http_request)."""
    import httpx

    totals, session = {side: [] for side in urls}, uuid.uuid4().hex
    with httpx.Client(timeout=60) as http:
        for i in range(pairs + warmup):
            order = list(urls) if i % 2 == 0 else list(urls)[::-1]
            for side in order:
                one = raw_http_request(http, urls[side], image, model_name, session_hash=session,
                                       click_after_s=click_after_s)
                total = one["after_click" if click_after_s else "total"]
                if i >= warmup:
                    totals[side].append(total)
    a, b = totals["A"], totals["B"]
    return {"A_p50_ms": statistics.median(a), "B_p50_ms": statistics.median(b),
            "B_over_A": statistics.median(y / x for x, y in zip(a, b))}


def alternating_phases(servers: dict, valid: list[Path], model_name: str, clients: int, seconds: float,
                       rounds: int) -> dict:
    rows = {side: [] for side in servers}
    for url, _ in servers.values():
        run_clients(url, clients, 5, valid, [], model_name)  # warm-up, as benchmarks/load.py
    for r in range(rounds):
        for side in (list(servers) if r % 2 == 0 else list(servers)[::-1]):
            url, proc = servers[side]
            results, wall, cpu = run_clients(url, clients, seconds, valid, [], model_name, psutil.Process(proc.pid))
            s = summarize(results, wall)
            if s["unexpected"]:
                raise RuntimeError(f"{side}: unexpected errors: {s['unexpected'][:3]}")
            rows[side].append({"req_s": s["throughput_per_s"], "p50": s["p50_ms"], "p95": s["p95_ms"],
                               "cpu_ms": cpu["server"] / len(results) * 1e3})
    return rows


IDLE_AFTER_S = 3.0  # past the app's queue polling for 2 s after the last request


def idle_cpu_percent(procs: dict, seconds: float) -> dict[str, float]:
    """Each server's CPU while nobody uses it, in % of one core, over the same window for all."""
    time.sleep(IDLE_AFTER_S)
    handles = {side: psutil.Process(proc.pid) for side, proc in procs.items()}
    before, t0 = {side: cpu_seconds(h) for side, h in handles.items()}, time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {side: (cpu_seconds(h) - before[side]) / wall * 100 for side, h in handles.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a-args", default="", help="options for A's app.py (default: none)")
    p.add_argument("--b-args", default="", help="options for B's app.py, e.g. \"--no-torchscript\" (default: none)")
    p.add_argument("--b-root", type=Path, default=ROOT, help="checkout whose app.py is B (default: this one)")
    p.add_argument("--b-env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="environment variables for B's process only (default: none)")
    p.add_argument("--model", default=str(ROOT / "weights" / "efficientnet_lite0_busi"),
                   help="model folder both serve (default: weights/efficientnet_lite0_busi)")
    p.add_argument("--pairs", type=int, default=100, help="one-client request pairs, 0 = skip (default: 100)")
    p.add_argument("--click-after", type=float, default=0.0,
                   help="one client calls this many seconds after each upload, as a person clicks Classify, and "
                        "is timed from the call to the images; 0 = straight after, timed from the upload "
                        "(default: 0)")
    p.add_argument("--clients", type=int, default=8, help="clients in the alternating phases (default: 8)")
    p.add_argument("--seconds", type=float, default=20, help="length of one phase (default: 20)")
    p.add_argument("--rounds", type=int, default=6, help="phases per side, 0 = skip (default: 6)")
    p.add_argument("--idle-seconds", type=float, default=10,
                   help="then both servers' CPU while nobody uses them, over one window, 0 = skip (default: 10)")
    p.add_argument("--b-first", action="store_true",
                   help="start B's server before A's; the one started second was 1-3%% faster in A/A runs "
                        "(default: A first)")
    args = p.parse_args()

    model = Path(args.model)
    valid = sorted((ROOT / "examples").glob("busi_*.png"))
    with ExitStack() as stack:
        stack.enter_context(client_files_in(Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="tumortrace-ab-clients-")))))
        servers = {}
        b_env = dict(item.split("=", 1) for item in args.b_env)
        sides = (("A", ROOT, args.a_args, {}), ("B", args.b_root.resolve(), args.b_args, b_env))
        for side, root, extra, env in sides[::-1] if args.b_first else sides:
            temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"tumortrace-ab-{side}-")))
            servers[side] = stack.enter_context(running_app("--model", str(model), *extra.split(), temp_dir=temp,
                                                            root=root, env=env))
        servers = {side: servers[side] for side in "AB"}  # A's column first whichever started first
        print(f"# {machine.describe()}; A: {ROOT} {args.a_args or '(defaults)'}; "
              f"B: {args.b_root} {args.b_args or '(defaults)'}"
              f"{' ' + ' '.join(args.b_env) if args.b_env else ''}; model {model.name}; "
              f"{'B' if args.b_first else 'A'}'s server started first")
        for side, (_, proc) in servers.items():
            line = serving_line(proc.log_path) or "(no serving line in the app's log)"
            print(f"# {side} serves with: {line.split(' each; ', 1)[-1]}")
        if args.pairs:
            pairs = one_client_pairs({k: url for k, (url, _) in servers.items()}, valid[0], model.name, args.pairs,
                                     click_after_s=args.click_after)
            timed = f" (Classify {args.click_after:g} s after the upload; from the click)" if args.click_after else ""
            print(f"one client, {args.pairs} alternating raw-HTTP pairs{timed}: A p50 {pairs['A_p50_ms']:.1f} ms, "
                  f"B p50 {pairs['B_p50_ms']:.1f} ms, median per-pair B/A {pairs['B_over_A']:.3f}")
        if args.rounds:
            rows = alternating_phases(servers, valid, model.name, args.clients, args.seconds, args.rounds)
            for side, phases in rows.items():
                med = {k: statistics.median(ph[k] for ph in phases) for k in ("req_s", "p50", "p95", "cpu_ms")}
                per_phase = " ".join(f"{ph['req_s']:.1f}" for ph in phases)
                print(f"{args.clients} clients, {side}: req/s per phase {per_phase} (median {med['req_s']:.1f}); "
                      f"p50 {med['p50']:.0f} ms, p95 {med['p95']:.0f} ms; "
                      f"server CPU per request {med['cpu_ms']:.0f} ms")
            ratios = [b["req_s"] / a["req_s"] for a, b in zip(rows["A"], rows["B"])]
            print(f"{args.clients} clients, throughput B/A per round: {' '.join(f'{r:.2f}' for r in ratios)} "
                  f"(median {statistics.median(ratios):.2f})")
        if args.idle_seconds:
            idle = idle_cpu_percent({side: proc for side, (_, proc) in servers.items()}, args.idle_seconds)
            print(f"idle, {args.idle_seconds:.0f} s after {IDLE_AFTER_S:.0f} s without requests: server CPU A "
                  f"{idle['A']:.1f}%, B {idle['B']:.1f}% of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
