"""A minimal Hugging Face Hub file server on 127.0.0.1 for tests (the endpoints hf_hub_download uses).

HEAD/GET /{org}/{name}/resolve/{revision}/{file} with the Hub's headers (X-Repo-Commit, ETag,
Content-Length) and its error codes (X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound).
"""
from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class HubRepo:
    def __init__(self, folder: Path, files: tuple[str, ...] | None = None):
        self.files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())
                      if p.is_file() and (files is None or p.name in files)}
        self.commit = hashlib.sha1(b"".join(self.files.values())).hexdigest()
        self.refs = {"main": self.commit}


class FakeHub:
    def __init__(self, delay_s: float = 0.0):
        self.repos: dict[str, HubRepo] = {}
        self.delay_s = delay_s
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                hub.requests.append(f"{self.command} {self.path}")
                if hub.delay_s:
                    time.sleep(hub.delay_s)
                parts = unquote(self.path.split("?")[0]).strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "RepoNotFound")
                repo = hub.repos.get(f"{parts[0]}/{parts[1]}")
                if repo is None:
                    return self._error(401, "RepoNotFound")
                rev, name = parts[3], "/".join(parts[4:])
                commit = repo.refs.get(rev) or (rev if rev == repo.commit else None)
                if commit is None:
                    return self._error(404, "RevisionNotFound")
                if name not in repo.files:
                    return self._error(404, "EntryNotFound")
                data = repo.files[name]
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
