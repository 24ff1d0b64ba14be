"""Fewer thread hops in the HTTP server Gradio runs (FastAPI on Starlette on uvicorn).

Every hop from the event loop to a worker thread and back costs the event loop's CPU and the wait for a
worker to wake, on the 2 cores that also run the model. A lone prediction from a browser is five HTTP
requests (upload, call, event stream, two image downloads), and in Gradio 6.31 with FastAPI 0.165 and
Starlette 1.10 they made 20.35 hops per prediction (``benchmarks/hops.py``), two kinds of them avoidable:

- Gradio's ``login_check`` dependency is a plain ``def``, so FastAPI runs it in the thread pool on every
  route that has it (all but the static ones): a comparison and maybe an HTTP 401, in a worker thread.
  :func:`run_login_check_inline` has FastAPI call it directly instead, still before the route and with
  the same 401.
- Starlette's ``FileResponse`` reads the file in 64 KiB chunks, one hop each (a 180 KiB slice PNG: three).
  :func:`read_files_in_one_chunk` raises the chunk to 1 MiB; what is read per request stays bounded.

Both leave everything else as it was, and say in the log (``describe``) what was applied; where the code
they rely on has changed they apply nothing and say so, and the app serves as before.
"""
from __future__ import annotations

import logging
import weakref

log = logging.getLogger(__name__)

FILE_CHUNK_BYTES = 2**20
_inline = weakref.WeakSet()  # sync dependencies FastAPI calls on the event loop instead of in a thread
_solver_wrapped = False  # FastAPI's run_in_threadpool replaced by one that knows _inline (once a process)


def gradio_login_checks(app) -> set:
    """The ``login_check`` dependencies Gradio's ``create_app`` gave ``app``'s routes (one per app)."""
    found = set()
    for route in app.routes:
        for dependency in getattr(getattr(route, "dependant", None), "dependencies", ()):
            call = dependency.call
            if getattr(call, "__module__", "") == "gradio.routes" and getattr(call, "__name__", "") == "login_check":
                found.add(call)
    return found


def run_inline(*calls) -> bool:
    """Have FastAPI call these sync dependencies on the event loop (they must neither block nor take long).

    False, and nothing changed, where FastAPI's dependency solver no longer calls a module-level
    ``run_in_threadpool`` (FastAPI 0.165, pinned in requirements.txt, does)."""
    global _solver_wrapped
    import fastapi.dependencies.utils as solver

    if not _solver_wrapped:
        original = getattr(solver, "run_in_threadpool", None)
        if original is None or "run_in_threadpool" not in solver.solve_dependencies.__code__.co_names:
            return False

        async def run_in_threadpool(func, *args, **kwargs):
            if func in _inline:
                return func(*args, **kwargs)
            return await original(func, *args, **kwargs)

        solver.run_in_threadpool = run_in_threadpool
        _solver_wrapped = True
    _inline.update(calls)
    return True


def run_login_check_inline(app) -> bool:
    """Gradio's login check on ``app``'s routes called on the event loop; False where it was not found."""
    checks = gradio_login_checks(app)
    return bool(checks) and run_inline(*checks)


def read_files_in_one_chunk(chunk_bytes: int = FILE_CHUNK_BYTES) -> bool:
    """Starlette's FileResponse reads (and sends) ``chunk_bytes`` at a time, one thread hop per read."""
    from starlette.responses import FileResponse

    if not isinstance(getattr(FileResponse, "chunk_size", None), int):
        return False
    FileResponse.chunk_size = max(FileResponse.chunk_size, chunk_bytes)
    return True


def fewer_hops(app) -> list[str]:
    """Both, for a launched Gradio ``app`` (``demo.app``): the names of what was applied, for the log."""
    applied = []
    if run_login_check_inline(app):
        applied.append("login check on the event loop")
    else:
        log.warning("Gradio's login check was not found on the app's routes, or FastAPI's dependency solver has "
                    "changed: it stays in the thread pool")
    if read_files_in_one_chunk():
        applied.append(f"files read in {FILE_CHUNK_BYTES // 2**20} MiB chunks")
    else:
        log.warning("Starlette's FileResponse has no integer chunk_size any more: files are read in its own "
                    "chunks, one thread hop each")
    return applied


def describe(applied: list[str]) -> str:
    """For the app's "serving" log line."""
    return "fewer thread hops: " + ", ".join(applied) if applied else "Gradio's thread hops as they are"
