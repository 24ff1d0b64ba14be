"""Start the real app (python app.py) on a free port and wait until it answers."""
from __future__ import annotations

import functools
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from conftest import PY, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def thread_hops_counted():
    """The name of every function the server in this process hands from its event loop to a worker thread
    (``anyio.to_thread.run_sync``, ``functools.partial`` unwrapped) while the block runs, in order. Gradio's
    queue binds ``run_sync`` by name when it is imported: its own hops count only if gradio is imported inside
    the block (benchmarks/hops.py); Starlette's and FastAPI's always do."""
    import anyio.to_thread

    calls, real = [], anyio.to_thread.run_sync

    async def run_sync(func, *args, **kwargs):
        inner = func.func if isinstance(func, functools.partial) else func
        calls.append(getattr(inner, "__qualname__", type(inner).__name__))
        return await real(func, *args, **kwargs)

    anyio.to_thread.run_sync = run_sync
    try:
        yield calls
    finally:
        anyio.to_thread.run_sync = real


@contextmanager
def running_app(*args: str, env: dict | None = None, temp_dir: Path | None = None, timeout: float = 120,
                root: Path = ROOT):
    """``root``: the checkout whose app.py runs (benchmarks/ab.py compares two). The app's log is
    ``proc.log_path``, in ``temp_dir``, or else in /tmp until the block ends."""
    port = free_port()
    full_env = {k: v for k, v in dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1", **(env or {})).items()
                if v is not None}  # a None in ``env`` removes the variable
    if temp_dir is not None:
        full_env["GRADIO_TEMP_DIR"] = str(temp_dir)
    log_path = Path(temp_dir or "/tmp") / f"app-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([PY, "app.py", "--port", str(port), *args], cwd=root, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "gradio_api/info", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answers (e.g. 401 behind a login)
            except OSError:
                time.sleep(0.5)
        else:
            raise TimeoutError(f"app did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")
        proc.log_path = log_path
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if temp_dir is None:
            log_path.unlink(missing_ok=True)  # read inside the block; its tail is in any error raised above


def serving_line(log_path: Path, timeout: float = 30) -> str | None:
    """The app's "serving ..." log line (threads, event loop, HTTP parser), or None if it is not logged in
    ``timeout`` s: it is logged just after the server starts answering, so ``running_app`` may return first."""
    deadline = time.monotonic() + timeout
    while True:
        line = next((l for l in log_path.read_text().splitlines() if " serving " in l), None)
        if line or time.monotonic() > deadline:
            return line
        time.sleep(0.2)


@contextmanager
def client_files_in(folder: Path):
    """Keep gradio_client's files in ``folder`` while the block runs (this process's ``tempfile`` folder).

    gradio_client 2.7 downloads each output file into a new ``tempfile.gettempdir()/<40 hex>`` folder, moves
    it on to its download folder and never removes the emptied one: one folder per file, two per prediction,
    ~4,000 a minute in a load run (290,000 had piled up in /tmp on the development machine). Its download
    folder, $GRADIO_TEMP_DIR or /tmp/gradio, would also keep a copy of every image the app sent back.
    Clients made with ``new_client`` inside the block keep both here."""
    folder.mkdir(parents=True, exist_ok=True)
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous


def new_client(url: str, **options):
    """A gradio_client for the app at ``url``, quiet, downloading beside its other temporary files (see
    ``client_files_in``)."""
    from gradio_client import Client

    return Client(url, analytics_enabled=False, verbose=False,
                  download_files=Path(tempfile.gettempdir()) / "downloads", **options)
