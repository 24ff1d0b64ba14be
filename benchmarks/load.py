"""Load test: the real app over HTTP with gradio_client, 1 and N concurrent clients.

    python benchmarks/load.py [--clients 1 8] [--seconds 60] [--hostile] [--model weights/NAME]

Reports per client count: requests, p50/p95 latency, throughput, unexpected errors, hostile files answered
with their specific error, the server's resident memory after warm-up and at the end, and files left in
the app's upload/cache folder that hold an uploaded image. The baseline is the in-process model time
(load, predict, CAM, overlay) measured in this same run. Exits 1 on any unexpected error, a hostile file
not answered with its error, memory growth above 10%, or an upload left on disk.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import machine  # noqa: E402
from apputil import client_files_in, new_client, running_app  # noqa: E402
from hostile import CASES, write_case  # noqa: E402
from tumortrace import openmp  # noqa: E402
from tumortrace.malloc import tune_for_serving  # noqa: E402

HOSTILE_MIX = ["random_bytes.png", "empty.png", "one_pixel.png", "truncated.png", "bomb.png", "page.html.png",
               "no_pixels.dcm", "float_nan.tiff", "extreme_aspect.png"]


def in_process_predictor(model: str, image: Path, fold_batchnorm: bool = True, torchscript: bool = True):
    """A function that runs the app's model path once in this process (load, predict, CAM, overlay)."""
    spin = openmp.shorten_spin()  # as the app: before torch loads libgomp, which reads it then
    import torch
    if spin:
        del os.environ["GOMP_SPINCOUNT"]  # the app this script starts sets its own

    from tumortrace.cam import overlay
    from tumortrace.checkpoint import load
    from tumortrace.inference import display_pixels, predict_file

    torch.set_num_threads(2)
    loaded = load(model, for_inference=fold_batchnorm, torchscript=torchscript)  # the model as the app serves it

    def run():
        pred = predict_file(loaded, image)
        overlay(display_pixels(pred.image), pred.cam)  # as the app: a gray slice stays one channel
    return run


def in_process_ms(run, runs: int = 30) -> float:
    times = []
    for i in range(runs + 3):
        t = time.perf_counter()
        run()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def shared_tls_context(stock_client: bool = False):
    """gradio_client opens a new httpx client for every upload, event stream and download, and httpx builds a
    TLS context for each even on plain http (~35 ms of CPU: encode/httpx#2298): 86% of the client's CPU in a
    py-spy profile, taken from the 2 cores the server runs on. One context, built the way httpx builds its
    default, serves every request instead; the requests are otherwise unchanged. None = stock behaviour."""
    import httpx
    return None if stock_client else httpx.create_ssl_context()


def gradio_client(url: str, tls_context):
    client = new_client(url)
    if tls_context is not None:
        client.ssl_verify = tls_context  # passed as httpx's verify=, which accepts a context
    return client


def app_in_process(model: str) -> str:
    """Serve the app from this process as `python app.py` does (malloc settings, torch threads, registry); its URL.

    GRADIO_TEMP_DIR must be set before `app` is first imported."""
    import app  # before torch: its OpenMP setting (tumortrace.openmp)
    import torch
    from apputil import free_port
    from tumortrace.registry import build_registry

    tune_for_serving()
    torch.set_num_threads(app.threads_per_prediction(0, app.CONCURRENCY))
    port = free_port()
    app.launch(app.build_app(build_registry(model, None)), server_name="127.0.0.1", server_port=port, quiet=True)
    return f"http://127.0.0.1:{port}/"


def exit_after_in_process_run(measure, args, work: Path) -> None:
    """For a script that serves the app in its own process (``work`` holding its GRADIO_TEMP_DIR): run
    ``measure(args)`` with gradio_client's files in ``work`` too, remove ``work``, and exit with the code
    measure returns; the Gradio server's threads would otherwise keep the process alive."""
    import shutil

    try:
        with client_files_in(work / "clients"):
            code = measure(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os._exit(code)


def run_clients(url: str, clients: int, seconds: float, valid: list[Path], hostile: list[Path], model_name: str,
                server: psutil.Process | None = None, stock_client: bool = False, raw_http: bool = False):
    """Returns (per-request outcomes, wall seconds, CPU seconds used by the server and by this client process).

    ``raw_http``: each client speaks Gradio's HTTP API as :func:`raw_http_request` does (one connection and
    one session each, as a browser tab), instead of through gradio_client."""
    import httpx
    from gradio_client import handle_file

    results, lock = [], threading.Lock()
    stop = time.monotonic() + seconds
    tls = shared_tls_context(stock_client)

    def through_gradio_client(client, path: Path) -> str:
        out = client.predict(handle_file(str(path)), model_name, 0.45, api_name="/predict")
        conf = {c["label"]: c["confidence"] for c in out[0]["confidences"]}
        return "ok" if abs(sum(conf.values()) - 1) <= 1e-4 else "bad-output"

    def answered(expected: str | None, message: str) -> str:
        return "hostile-answered" if expected and expected in message else f"error: {message}"

    def worker(k: int):
        client = None if raw_http else gradio_client(url, tls)
        session = uuid.uuid4().hex
        with httpx.Client(timeout=60) if raw_http else contextlib.nullcontext() as http:
            i = k
            while time.monotonic() < stop:
                use_hostile = bool(hostile) and i % 4 == 3
                path = hostile[(i // 4) % len(hostile)] if use_hostile else valid[i % len(valid)]
                expected = CASES[path.name.replace("⁄", "/")][1][1] if use_hostile else None
                t = time.perf_counter()
                try:
                    if raw_http:
                        answer = raw_http_request(http, url, path, model_name, rejected=use_hostile,
                                                  session_hash=session)
                        outcome = answered(expected, answer["error"]) if use_hostile else "ok"
                    else:
                        outcome = through_gradio_client(client, path)
                        outcome = "hostile-accepted" if use_hostile else outcome
                except Exception as exc:  # AppError carries the app's message; RuntimeError raw HTTP's
                    outcome = answered(expected, str(exc))
                with lock:
                    results.append((outcome, time.perf_counter() - t, use_hostile))
                i += clients

    me = psutil.Process()
    threads = [threading.Thread(target=worker, args=(k,), name=f"load-client-{k}") for k in range(clients)]
    start, server_cpu, client_cpu = time.monotonic(), cpu_seconds(server), cpu_seconds(me)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.monotonic() - start, {"server": cpu_seconds(server) - server_cpu,
                                               "clients": cpu_seconds(me) - client_cpu}


def cpu_seconds(process: psutil.Process | None) -> float:
    """User + system CPU time of ``process`` so far (0 for None)."""
    return sum(process.cpu_times()[:2]) if process else 0.0


def raw_http_ms(url: str, image: Path, model_name: str, runs: int, in_process=None,
                click_after_s: float = 0.0) -> dict:
    """One client speaking Gradio's HTTP API directly (upload, /call, event stream, the two image downloads):
    the requests a browser makes, without gradio_client's own threads and polling. Median ms per phase.

    With ``in_process``, each request is paired with one in-process run just before it, so the machine's
    drifts hit both alike: ``in_process`` is then their median and ``paired_ratio`` the median of the
    per-pair ratios (the in-process baseline alone moved 41–64 ms between runs of one day).
    ``click_after_s``: see :func:`raw_http_request`."""
    import httpx

    phases = {"upload": [], "call": [], "queue_and_handler": [], "downloads": [], "total": [], "after_click": [],
              "in_process": [], "paired_ratio": []}
    session = uuid.uuid4().hex  # one page, many requests
    with httpx.Client(timeout=60) as http:
        for i in range(runs + 3):
            if in_process is not None:
                t = time.perf_counter()
                in_process()
                base = (time.perf_counter() - t) * 1e3
            one = raw_http_request(http, url, image, model_name, session_hash=session, click_after_s=click_after_s)
            if i >= 3:
                for k, ms in one.items():
                    phases[k].append(ms)
                if in_process is not None:
                    phases["in_process"].append(base)
                    phases["paired_ratio"].append(one["total"] / base)
    return {k: statistics.median(v) if v else None for k, v in phases.items()}


def raw_http_request(http, url: str, image: Path, model_name: str, rejected: bool = False,
                     session_hash: str | None = None, click_after_s: float = 0.0) -> dict[str, float]:
    """One prediction over Gradio's HTTP API with an ``httpx.Client``: ms per phase and in total.

    ``rejected``: ``image`` is one the app refuses; its error event ends the request (no downloads).
    ``session_hash``: as a browser page (and gradio_client) sends with every request; without one, Gradio
    builds a fresh session state of the whole page for the call (~3 ms of its event loop here).
    ``click_after_s``: the call waits this long after the upload, as a person choosing a file and then
    clicking Classify; ``after_click`` is then the time from the call to the images (the pause is in no
    phase, nor in ``total``)."""
    data = image.read_bytes()
    t0 = time.perf_counter()
    path = http.post(url + "gradio_api/upload", files={"files": (image.name, data, "image/png")}).json()[0]
    t1 = time.perf_counter()
    if click_after_s:
        time.sleep(click_after_s)
        t0 += time.perf_counter() - t1
        t1 = time.perf_counter()
    payload = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, model_name, 0.45, 1]}
    if session_hash is not None:
        payload["session_hash"] = session_hash
    event = http.post(url + "gradio_api/call/predict", json=payload).json()["event_id"]
    t2 = time.perf_counter()
    outputs = error = None
    with http.stream("GET", url + f"gradio_api/call/predict/{event}") as stream:
        failed = False
        for line in stream.iter_lines():
            failed |= line.startswith("event: error")
            if failed and line.startswith("data:"):
                error = json.loads(line[5:]) if line[5:].strip() else None
                error = str(error.get("error") if isinstance(error, dict) else error)  # the app's message
                break
            if line.startswith("data:") and line[5:].strip().startswith("["):
                outputs = json.loads(line[5:])
    t3 = time.perf_counter()
    if rejected:
        if error is None:
            raise RuntimeError(f"raw HTTP predict accepted {image.name}, which should have been refused")
        return {"total": (t3 - t0) * 1e3, "error": error}
    if error is not None or outputs is None:
        raise RuntimeError(f"raw HTTP predict of {image.name} failed: {error}")
    for out in outputs[1:3]:
        http.get(out["url"]).raise_for_status()
    t4 = time.perf_counter()
    return {k: (b - a) * 1e3 for k, a, b in (("upload", t0, t1), ("call", t1, t2), ("queue_and_handler", t2, t3),
                                            ("downloads", t3, t4), ("total", t0, t4), ("after_click", t1, t4))}


def gradio_client_paired(url: str, image: Path, model_name: str, runs: int, in_process,
                         stock_client: bool = False) -> dict:
    """One gradio_client request after each in-process run: medians and the median of per-pair ratios."""
    from gradio_client import handle_file

    client = gradio_client(url, shared_tls_context(stock_client))
    here, there = [], []
    for i in range(runs + 3):
        t = time.perf_counter()
        in_process()
        t1 = time.perf_counter()
        client.predict(handle_file(str(image)), model_name, 0.45, api_name="/predict")
        t2 = time.perf_counter()
        if i >= 3:
            here.append((t1 - t) * 1e3)
            there.append((t2 - t1) * 1e3)
    return {"in_process": statistics.median(here), "total": statistics.median(there),
            "paired_ratio": statistics.median(b / a for a, b in zip(here, there))}


def client_floor(url: str, folder: Path, model_name: str, runs: int, stock_client: bool = False) -> dict:
    """Round trips of a request the app refuses at once (an empty file: no decoding, no model), one client:
    what HTTP, Gradio's queue and each client cost with next to no server work. gradio_client looks for
    its answer every 50 ms (``stream_sse_v1plus``), which a raw-HTTP event stream does not."""
    import httpx
    from gradio_client import handle_file

    rejected, expected = write_case(folder, "empty.png"), CASES["empty.png"][1][1]
    client = gradio_client(url, shared_tls_context(stock_client))
    raw, through_client, session = [], [], uuid.uuid4().hex
    with httpx.Client(timeout=60) as http:
        for i in range(runs + 3):
            answer = raw_http_request(http, url, rejected, model_name, rejected=True, session_hash=session)
            if expected not in answer["error"]:
                raise RuntimeError(f"raw HTTP: {rejected.name} refused with {answer['error']!r}")
            t = time.perf_counter()
            try:
                client.predict(handle_file(str(rejected)), model_name, 0.45, api_name="/predict")
            except Exception as exc:  # AppError: the app's message
                if expected not in str(exc):
                    raise
            else:
                raise RuntimeError(f"gradio_client: the app accepted {rejected.name}")
            if i >= 3:
                raw.append(answer["total"])
                through_client.append((time.perf_counter() - t) * 1e3)
    return {"raw_http": statistics.median(raw), "gradio_client": statistics.median(through_client)}


def handler_ms(log_path: Path) -> float | None:
    times = [float(line.rsplit(", ", 1)[1].split(" ms")[0]) for line in log_path.read_text().splitlines()
             if "ms in the handler" in line]
    return statistics.median(times[-30:]) if times else None


def classified_ahead(log_path: Path, last: int) -> int:
    """Of the app's last ``last`` predictions, how many took the result classified as their upload arrived
    (tumortrace/ahead.py) rather than classifying in the request."""
    said = [line for line in log_path.read_text().splitlines() if "ms in the handler" in line][-last:]
    return sum("classified as it arrived" in line for line in said)


def summarize(results, wall: float) -> dict:
    ok = sorted(d for o, d, h in results if o == "ok")
    return {
        "requests": len(results), "valid_ok": len(ok),
        "p50_ms": statistics.median(ok) * 1e3 if ok else None,
        "p95_ms": ok[int(0.95 * (len(ok) - 1))] * 1e3 if ok else None,
        "throughput_per_s": len(results) / wall,
        "mean_all_ms": statistics.fmean(d for _, d, _ in results) * 1e3 if results else None,  # hostile too
        "hostile_answered": sum(o == "hostile-answered" for o, _, _ in results),
        "hostile_sent": sum(h for _, _, h in results),
        "unexpected": [o for o, _, _ in results if o not in ("ok", "hostile-answered")],  # all: the table counts them
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients per phase (default: 1 8)")
    p.add_argument("--seconds", type=float, default=60, help="duration of each phase (default: 60)")
    p.add_argument("--hostile", action="store_true", help="every 4th request sends a hostile file (default: off)")
    p.add_argument("--model", default=None, help="model folder (default: the first in weights/)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON (default: no)")
    p.add_argument("--soak-rounds", type=int, default=0,
                   help="after the phases, this many more rounds at the highest client count, reading the "
                        "server's memory after each (default: 0)")
    p.add_argument("--stock-client", action="store_true",
                   help="let gradio_client build a TLS context per HTTP request, as it does by default "
                        "(default: one shared context; see run_clients)")
    p.add_argument("--app-args", default="", help="extra options for app.py, e.g. \"--concurrency 1\" (default: none)")
    p.add_argument("--raw-clients", type=int, nargs="*", default=[],
                   help="after the gradio_client phases, phases with this many clients speaking raw HTTP, as "
                        "browser tabs do (one connection and session each, no polling), e.g. 1 8 (default: none)")
    p.add_argument("--raw-runs", type=int, default=30,
                   help="single-client requests over raw HTTP for the phase breakdown, 0 = skip (default: 30)")
    p.add_argument("--click-after", type=float, default=0.3,
                   help="then as many more, each calling this many seconds after its upload as a person clicks "
                        "Classify after choosing a file, timed from the call to the images; 0 = skip (default: 0.3)")
    args = p.parse_args()

    # Not tumortrace.registry.model_folders: importing it imports torch, before in_process_predictor can set
    # the OpenMP spin that torch's libgomp reads when it loads.
    model = Path(args.model) if args.model else sorted(f for f in (ROOT / "weights").iterdir()
                                                       if (f / "config.json").is_file())[0]
    valid = sorted(p for p in (ROOT / "examples").glob("busi_*.png"))
    work = Path(tempfile.mkdtemp(prefix="tumortrace-load-"))
    hostile = [write_case(work, name) for name in HOSTILE_MIX] if args.hostile else []
    app_args = args.app_args.split()
    tune_for_serving()  # the in-process baseline gets the app's allocator (else some processes fault on every run)
    predict_here = in_process_predictor(str(model), valid[0], "--no-fold-batchnorm" not in app_args,
                                        "--no-torchscript" not in app_args)
    baseline = in_process_ms(predict_here)
    print(f"# {machine.describe()}; model {model.name}; in-process predict+CAM+overlay p50 {baseline:.1f} ms; "
          f"{args.seconds:.0f} s per phase; hostile mix {'on' if hostile else 'off'}; "
          f"gradio_client TLS context {'per request (stock)' if args.stock_client else 'shared'}; app options: {args.app_args or 'defaults'}")
    upload_digests = {hashlib.sha256(f.read_bytes()).hexdigest() for f in valid + hostile if f.stat().st_size}
    temp = work / "gradio"
    temp.mkdir()
    report, failed = {"baseline_ms": baseline, "phases": []}, False
    with client_files_in(work / "clients"), running_app("--model", str(model), *args.app_args.split(),
                                                        temp_dir=temp) as (url, proc):
        server = psutil.Process(proc.pid)
        # warm-up at the highest load: each of the app's worker threads allocates its buffers once
        run_clients(url, max(args.clients), 8, valid, [], model.name)
        rss_start = server.memory_info().rss
        for n, raw in [(n, False) for n in args.clients] + [(n, True) for n in args.raw_clients]:
            results, wall, cpu = run_clients(url, n, args.seconds, valid, hostile, model.name, server,
                                             args.stock_client, raw_http=raw)
            s = summarize(results, wall)
            s.update(clients=n, via="raw HTTP" if raw else "gradio_client",
                     server_cpu_ms_per_request=cpu["server"] / len(results) * 1e3,
                     client_cpu_ms_per_request=cpu["clients"] / len(results) * 1e3,
                     cpu_busy=(cpu["server"] + cpu["clients"]) / (wall * psutil.cpu_count()))
            report["phases"].append(s)
        report["soak_rss_mib"], report["soak_unexpected"] = [server.memory_info().rss / 2**20], []
        for _ in range(args.soak_rounds):
            results, _, _ = run_clients(url, max(args.clients), args.seconds, valid, hostile, model.name, None,
                                        args.stock_client)
            report["soak_unexpected"] += [o for o, _, _ in results if o not in ("ok", "hostile-answered")]
            report["soak_rss_mib"].append(server.memory_info().rss / 2**20)
        if args.raw_runs:
            report["raw_http"] = raw_http_ms(url, valid[0], model.name, args.raw_runs, predict_here)
            report["raw_http"]["handler"] = handler_ms(proc.log_path)
            if args.click_after:
                # Not paired with in-process runs: after as long without work, a 2-thread in-process
                # prediction is up to ~1.8x slower here, a served (1-thread) one is not (benchmarks/HISTORY.md).
                report["browser"] = raw_http_ms(url, valid[0], model.name, args.raw_runs,
                                                click_after_s=args.click_after)
                report["browser"]["handler"] = handler_ms(proc.log_path)
                report["browser"]["ahead"] = classified_ahead(proc.log_path, args.raw_runs)
            report["gradio_client_paired"] = gradio_client_paired(url, valid[0], model.name, args.raw_runs,
                                                                  predict_here, args.stock_client)
            report["client_floor"] = client_floor(url, work, model.name, args.raw_runs, args.stock_client)
        rss_end = server.memory_info().rss
        # any file holding an upload's bytes, and any empty temp file (Gradio leaked one per request)
        left = [f for f in temp.rglob("*") if f.is_file() and (f.stat().st_size == 0 or
                hashlib.sha256(f.read_bytes()).hexdigest() in upload_digests)]
    growth = rss_end / rss_start - 1
    report.update(rss_start_mib=rss_start / 2**20, rss_end_mib=rss_end / 2**20, rss_growth=growth,
                  uploads_left_on_disk=len(left))
    print("| clients | requests | p50 ms | p95 ms | req/s | p50 / in-process | hostile answered | unexpected errors |")
    print("|---|---|---|---|---|---|---|---|")
    for ph in report["phases"]:
        label = ph["clients"] if ph["via"] == "gradio_client" else f"{ph['clients']} over raw HTTP"
        print(f"| {label} | {ph['requests']} | {ph['p50_ms']:.0f} | {ph['p95_ms']:.0f} | "
              f"{ph['throughput_per_s']:.2f} | {ph['p50_ms'] / baseline:.2f} | "
              f"{ph['hostile_answered']}/{ph['hostile_sent']} | {len(ph['unexpected'])} |")
        failed |= bool(ph["unexpected"]) or ph["hostile_answered"] != ph["hostile_sent"] or not ph["valid_ok"]
    for ph in report["phases"]:
        single = next((p["p50_ms"] for p in report["phases"] if p["clients"] == 1 and p["via"] == ph["via"]), None)
        if single and ph["clients"] > 1:
            via = "" if ph["via"] == "gradio_client" else " over raw HTTP"
            print(f"p95 with {ph['clients']} clients / single-client p50{via}: {ph['p95_ms'] / single:.2f}")
            # Closed loop: mean round trip = clients / throughput, and throughput ≤ cores / CPU per request, so
            # the mean cannot drop below clients × CPU per request / cores while the clients share the cores.
            cpu_ms = ph["server_cpu_ms_per_request"] + ph["client_cpu_ms_per_request"]
            floor = ph["clients"] * cpu_ms / psutil.cpu_count()
            print(f"  mean round trip of all its requests {ph['mean_all_ms']:.0f} ms; with all {psutil.cpu_count()} "
                  f"cores busy at this CPU per request ({cpu_ms:.0f} ms, server + clients) it could not be below "
                  f"{floor:.0f} ms = {floor / single:.2f}× the single-client p50{via}")
    if "raw_http" in report:
        r = report["raw_http"]
        print(f"one client over raw HTTP ({args.raw_runs} requests, {valid[0].name}): p50 {r['total']:.0f} ms = "
              f"{r['total'] / baseline:.2f}× in-process; upload {r['upload']:.0f}, call {r['call']:.0f}, "
              f"queue + handler + event {r['queue_and_handler']:.0f} (handler {r['handler'] or float('nan'):.0f}), "
              f"two image downloads {r['downloads']:.0f} ms")
        g = report["gradio_client_paired"]
        print(f"one client, each request paired with an in-process run just before it ({args.raw_runs} pairs): "
              f"raw HTTP {r['total']:.0f} / {r['in_process']:.1f} ms, median ratio {r['paired_ratio']:.2f}; "
              f"gradio_client {g['total']:.0f} / {g['in_process']:.1f} ms, median ratio {g['paired_ratio']:.2f}")
        if "browser" in report:
            b = report["browser"]
            print(f"one client as a browser, Classify clicked {args.click_after:g} s after the upload ({args.raw_runs} "
                  f"requests): from the click to the images p50 {b['after_click']:.0f} ms (handler "
                  f"{b['handler'] or float('nan'):.0f}) = {b['after_click'] / baseline:.2f}× in-process (the upload, "
                  f"{b['upload']:.0f} ms, came before the click; {b['ahead']} of the last {args.raw_runs} predictions "
                  "were classified then too, before the click: tumortrace/ahead.py)")
        f = report["client_floor"]
        print(f"one client, an upload the app refuses at once (empty.png, no model work; {args.raw_runs} requests): "
              f"raw HTTP {f['raw_http']:.0f} ms, gradio_client {f['gradio_client']:.0f} ms = "
              f"{f['gradio_client'] / baseline:.2f}× in-process (gradio_client's floor: it looks for answers every 50 ms)")
    for ph in report["phases"]:
        print(f"{ph['clients']} client(s) via {ph['via']}: CPU per request: server "
              f"{ph['server_cpu_ms_per_request']:.0f} ms, clients {ph['client_cpu_ms_per_request']:.0f} ms; "
              f"all {psutil.cpu_count()} cores "
              f"{ph['cpu_busy']:.0%} busy")
    if args.soak_rounds:
        print(f"soak ({args.soak_rounds} × {args.seconds:.0f} s at {max(args.clients)} clients), server MiB after each: "
              + " → ".join(f"{v:.0f}" for v in report["soak_rss_mib"]))
    print(f"server memory: {rss_start / 2**20:.0f} MiB after warm-up → {rss_end / 2**20:.0f} MiB at end "
          f"({growth:+.1%}); uploads left on disk: {len(left)}")
    failed |= growth > 0.10 or bool(left) or bool(report["soak_unexpected"])
    for u in report["soak_unexpected"][:5]:
        print(f"unexpected during the soak: {u}")
    for ph in report["phases"]:
        for u in ph["unexpected"][:5]:
            print(f"unexpected: {u}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print("load test:", "FAILED" if failed else "passed")
    if failed:
        print(f"the app's log and files are kept in {work}")
    else:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
