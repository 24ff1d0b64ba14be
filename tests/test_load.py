"""Short CI variant of benchmarks/load.py: concurrent clients, valid + hostile files, against the real app."""
import re

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def _private_tmp(tmp_path):
    """A TMPDIR for one benchmark run: all it writes must be gone at the end (gradio_client alone left two empty
    folders per prediction there, and a copy of every image it downloaded)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder, {"TMPDIR": str(folder)}


def _left_in(folder):
    """What a run left in its TMPDIR, apart from torch's compile cache (torchinductor_USER, kept across runs
    by design and empty here)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.startswith("torchinductor_")
                  and not p.parent.name.startswith("torchinductor_"))


def test_load_short_variant(trained_model, tmp_path):
    tmp, env = _private_tmp(tmp_path)
    proc = run_cli("benchmarks/load.py", "--clients", "1", "3", "--seconds", "12", "--hostile", "--raw-runs", "5", "--soak-rounds", "1",
                   "--raw-clients", "1", "2",
                   "--model", str(trained_model), timeout=600, env=env)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert _left_in(tmp) == []
    assert "load test: passed" in out and "uploads left on disk: 0" in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and all(line.rstrip().endswith("| 0 |") for line in rows)  # no unexpected errors
    assert "one client over raw HTTP (5 requests" in out and "two image downloads" in out
    paired = next(l for l in out.splitlines() if l.startswith("one client, each request paired"))
    assert float(paired.split("median ratio ")[1].split(";")[0]) > 1  # a round trip includes the model's work
    assert float(paired.rsplit("median ratio ", 1)[1]) > 1
    browser = next(l for l in out.splitlines() if l.startswith("one client as a browser, Classify clicked 0.3 s"))
    click = float(browser.split("p50 ")[1].split(" ms")[0])
    upload = float(browser.split("the upload, ")[1].split(" ms")[0])
    assert click > 0 and upload > 0 and float(browser.split(" = ")[1].split("×")[0]) > 0
    ahead = int(browser.split("came before the click; ")[1].split(" of the last 5 predictions")[0])
    assert ahead >= 1  # a lone client's upload, 0.3 s before its click, is classified in that gap (tumortrace/ahead.py)
    # the refused upload really was refused both ways (the script raises otherwise), and timed
    floor = next(l for l in out.splitlines() if l.startswith("one client, an upload the app refuses at once"))
    assert float(floor.split("raw HTTP ")[1].split(" ms")[0]) > 0
    assert float(floor.split("gradio_client ")[1].split(" ms")[0]) > 0
    assert "soak (1 × 12 s at 3 clients), server MiB after each:" in out
    assert "1 client(s) via gradio_client: CPU per request: server" in out
    raw_rows = [line for line in out.splitlines() if line.startswith(("| 1 over raw HTTP |", "| 2 over raw HTTP |"))]
    assert len(raw_rows) == 2 and all(line.rstrip().endswith("| 0 |") for line in raw_rows)
    hostile_answered = [line.split(" | ")[6] for line in raw_rows]
    assert all(int(a.split("/")[0]) == int(a.split("/")[1]) > 0 for a in hostile_answered), hostile_answered
    assert "p95 with 2 clients / single-client p50 over raw HTTP:" in out
    # Little's law: the measured mean of a closed loop can never beat the floor the cores set (small slack:
    # CPU is read from /proc at the phase's edges)
    floors = [l for l in out.splitlines() if l.startswith("  mean round trip of all its requests")]
    assert len(floors) == 2  # the 3-client and the 2-client phase
    for line in floors:
        mean = float(line.split("requests ")[1].split(" ms")[0])
        floor = float(line.split("could not be below ")[1].split(" ms")[0])
        assert 0 < floor <= mean * 1.1, line


def test_trace_memory_reports_rss_against_python_objects(trained_model, tmp_path):
    tmp, env = _private_tmp(tmp_path)
    proc = run_cli("benchmarks/trace_memory.py", "--model", str(trained_model), "--clients", "2", "--seconds", "3",
                   "--rounds", "1", "--top", "2", timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _left_in(tmp) == []  # the in-process app's folder too
    line = next(l for l in proc.stdout.splitlines() if l.startswith("round 1:"))
    assert "MiB since the warm-up; Python objects traced" in line
    assert int(line.split(":")[1].split()[0]) > 0  # requests were served
    assert len([l for l in proc.stdout.splitlines() if l.startswith("  ") and "MiB" in l]) == 2


def test_server_threads_splits_the_servers_cpu_by_thread_group(trained_model, tmp_path):
    tmp, env = _private_tmp(tmp_path)
    proc = run_cli("benchmarks/server_threads.py", "--model", str(trained_model), "--clients", "2",
                   "--seconds", "3", timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _left_in(tmp) == []
    row = next(l for l in proc.stdout.splitlines() if l.startswith("| 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[1]) > 0 and "errors" not in row  # requests were served, none failed
    loop, handlers, encoder, decoder, native, total = (float(c) for c in cells[3:9])
    assert loop > 0 and handlers > 0 and encoder > 0  # each group was found and did work
    assert abs(loop + handlers + encoder + decoder + native - total) < 0.25


def test_hops_benchmark_counts_what_goes_to_worker_threads(trained_model, tmp_path):
    tmp, env = _private_tmp(tmp_path)
    proc = run_cli("benchmarks/hops.py", "--model", str(trained_model), "--requests", "2", timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _left_in(tmp) == []
    rows = {line.split("`")[1]: float(line.split("|")[1]) for line in proc.stdout.splitlines() if "| `" in line}
    assert rows.get("build_app.<locals>.predict") == 1  # the handler: the one hop the app needs
    assert not any("login_check" in name for name in rows), rows  # tumortrace.server_hops
    # the two images come from the app's own layer (tumortrace.output_files), read on the event loop: no hop
    assert "BufferedReader.read" not in rows, rows
    total = float(proc.stdout.splitlines()[-1].removeprefix("thread hops per prediction: "))
    assert total == sum(rows.values())


def test_inference_benchmark_prints_its_table_and_ratio(trained_model):
    weights = trained_model.parent
    proc = run_cli("benchmarks/inference.py", "--runs", "3", "--weights", str(weights), "--no-cold-start", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("# ") and "CPUs available, torch kernels " in lines[0]  # which CPU gave these figures
    row = next(l for l in lines if l.startswith(f"| {trained_model.name} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 21 and float(cells[9]) > 0  # served / forward
    assert cells[17] in ("oneDNN Graph fusion", "optimize_for_inference")  # which one the served trunk uses
    assert float(cells[18]) > 0 and float(cells[19]) > 0  # both trunks ran
    parts = next(l for l in lines if l.startswith(f"{trained_model.name}, the app path's parts"))
    ms = dict(p.rsplit(" ", 1) for p in parts.split(": ", 1)[1].split(", "))
    assert list(ms) == ["served forward", "preprocess", "forward + CAM", "overlay"] and min(map(float, ms.values())) > 0
    assert lines[-2] == f"slowest model: {trained_model.name}"
    ratio = float(lines[-1].removeprefix("predict+cam/forward ratio: "))
    assert ratio > 1  # the app's path includes the forward, so it cannot be cheaper than it
    assert float(cells[13]) > 0 and float(cells[14]) == ratio  # against the forward timed in blocks with it


def test_inference_benchmark_times_each_run_right_after_one_of_its_own():
    """The ratio's two terms each in its own steady state: a fake clock that a function advances by 1 right after
    itself and by 100 right after the other gives p95 = 1 for both, with every run counted."""
    code = """
import sys; sys.path.insert(0, "benchmarks")
import inference
clock, last, calls = [0.0], [None], []
def step(name):
    def fn():
        clock[0] += 1 if last[0] == name else 100
        last[0] = name
        calls.append(name)
    return fn
inference.time.perf_counter = lambda: clock[0]
a, b = inference.timed_in_blocks((step("a"), step("b")), runs=12, block=5, warmup=2)
print(a["p50"], a["p95"], b["p50"], b["p95"], calls.count("a"), calls.count("b"))
"""
    out = run_cli("-c", code, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # 12 runs in blocks of 5: 3 blocks each, a warm-up call before each block and 2 warm-up rounds
    assert out.stdout.split() == ["1000.0", "1000.0", "1000.0", "1000.0", "20", "20"]


def test_openmp_spin_benchmark_runs_each_setting_in_a_process_of_its_own(trained_model):
    from tumortrace.openmp import SPIN_COUNT
    proc = run_cli("benchmarks/openmp_spin.py", "--rounds", "1", "--runs", "3", "--weights",
                   str(trained_model.parent), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in proc.stdout.splitlines()
            if l.startswith("| ") and trained_model.name in l]
    assert [r[0] for r in rows] == ["libgomp's default (300000)", f"the app's ({SPIN_COUNT})"]
    assert all(float(r[2]) >= 0 and float(r[6]) > 1 for r in rows), rows  # spin ms; the app path includes a forward


def test_ab_benchmark_compares_two_servers_running_at_once(trained_model, tmp_path):
    for package in ("uvloop", "httptools"):  # shadowed in B only, through --b-env
        (tmp_path / f"{package}.py").write_text("raise ImportError('shadowed for the test')\n")
    tmp, env = _private_tmp(tmp_path)
    proc = run_cli("benchmarks/ab.py", "--model", str(trained_model), "--b-args=--no-torchscript", "--pairs", "3",
                   "--clients", "2", "--seconds", "3", "--rounds", "1", "--b-env", f"PYTHONPATH={tmp_path}",
                   "--idle-seconds", "2", "--b-first", timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _left_in(tmp) == []
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(f"B: {ROOT} --no-torchscript PYTHONPATH={tmp_path}; model {trained_model.name}; "
                             "B's server started first")
    assert lines[1].startswith("# A serves with: ") and "; uvloop event loop, httptools HTTP parser;" in lines[1]
    assert lines[2].startswith("# B serves with: ") and "; asyncio event loop, h11 HTTP parser;" in lines[2]
    pair = next(l for l in lines if l.startswith("one client, 3 alternating raw-HTTP pairs"))
    assert float(pair.rsplit(" ", 1)[1]) > 0  # median per-pair B/A
    for side in "AB":
        row = next(l for l in lines if l.startswith(f"2 clients, {side}: req/s per phase "))
        assert float(row.split("median ")[1].split(")")[0]) > 0
    assert any(l.startswith("2 clients, throughput B/A per round: ") for l in lines)
    idle = next(l for l in lines if l.startswith("idle, 2 s after 3 s without requests: server CPU A "))
    a, b = (float(idle.split(f"{side} ")[1].split("%")[0]) for side in "AB")
    assert 0 <= a < 100 and 0 <= b < 100


def test_frames_benchmark_reads_every_frame_both_ways():
    proc = run_cli("benchmarks/frames.py", "--frames", "4", "--side", "64", "--rounds", "1", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [l for l in proc.stdout.splitlines() if l.startswith("| native |") or l.startswith("| RLE Lossless |")]
    assert len(rows) == 2
    for row in rows:
        size, slow, fast, ratio = (float(c) for c in row.strip("|").split("|")[1:])
        assert size > 0 and slow > 0 and fast > 0 and ratio > 0  # both ways read all 4 frames, or it exits 1


def test_png_benchmark_compares_both_encoders_on_each_set():
    proc = run_cli("benchmarks/png_encode.py", "--runs", "1", "--synthetic", "2", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # exits 1 if a PNG is not lossless
    rows = {l.split("|")[1].strip(): l for l in proc.stdout.splitlines() if l.startswith("| shipped") or
            l.startswith("| synthetic")}
    assert set(rows) == {"shipped examples (BUSI)", "synthetic MR-like"}
    assert rows["synthetic MR-like"].split("|")[2].strip() == "2"
    assert re.fullmatch(r"encode_png/OpenCV time ratio \(median over \d+ images\): \d+\.\d\d",
                        proc.stdout.strip().splitlines()[-1])
