"""tumortrace.server_hops: Gradio's login check on the event loop, files read in one chunk, login unchanged."""
import threading

import pytest

gr = pytest.importorskip("gradio")
import app  # noqa: E402
from apputil import free_port, thread_hops_counted  # noqa: E402
from tumortrace import server_hops  # noqa: E402

pytestmark = pytest.mark.slow


def test_a_sync_dependency_run_inline_runs_on_the_event_loop_and_others_still_hop():
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    seen = {}

    def inline_check():
        seen["inline"] = threading.get_ident()

    def other_check():
        seen["other"] = threading.get_ident()

    api = FastAPI()

    @api.get("/", dependencies=[Depends(inline_check), Depends(other_check)])
    async def endpoint():
        seen["loop"] = threading.get_ident()
        return {}

    assert server_hops.run_inline(inline_check)
    with TestClient(api) as client:
        assert client.get("/").status_code == 200
    assert seen["inline"] == seen["loop"]
    assert seen["other"] != seen["loop"]  # the control: a plain sync dependency still runs in the thread pool


def test_where_gradio_or_starlette_changed_nothing_is_applied_and_the_log_says_so(monkeypatch, caplog):
    from fastapi import FastAPI
    from starlette.responses import FileResponse

    monkeypatch.delattr(FileResponse, "chunk_size")  # a Starlette that reads files some other way
    with caplog.at_level("WARNING", logger="tumortrace.server_hops"):
        applied = server_hops.fewer_hops(FastAPI())  # an app without Gradio's login check
    assert applied == [] and server_hops.describe(applied) == "Gradio's thread hops as they are"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "login check was not found" in warned and "FileResponse has no integer chunk_size" in warned


@pytest.fixture
def hops():
    with thread_hops_counted() as calls:
        yield calls


def test_the_apps_login_check_makes_no_hop_and_still_refuses_and_files_come_in_one_read(tmp_path, hops):
    import httpx

    big = tmp_path / "slice.png"
    big.write_bytes(bytes(range(256)) * 1200)  # 300 KiB: five 64 KiB reads with Starlette's default
    with gr.Blocks() as demo:
        gr.Markdown("behind a login")
    port = free_port()
    applied = app.launch(demo, server_name="127.0.0.1", server_port=port, quiet=True, auth=("reviewer", "s3cret"),
                         allowed_paths=[str(tmp_path)])
    url = f"http://127.0.0.1:{port}/"
    try:
        assert applied == ["login check on the event loop", "files read in 1 MiB chunks"]
        assert "fewer thread hops: login check on the event loop" in server_hops.describe(applied)
        file_url = url + f"gradio_api/file={big}"
        with httpx.Client(timeout=30) as http:
            assert http.get(url + "gradio_api/info").status_code == 401
            assert http.get(file_url).status_code == 401
            assert http.post(url + "login", data={"username": "reviewer", "password": "wrong"}).status_code == 400
            assert http.post(url + "login", data={"username": "reviewer", "password": "s3cret"}).status_code == 200
            assert http.get(url + "gradio_api/info").status_code == 200
            del hops[:]
            response = http.get(file_url)
            assert response.status_code == 200 and response.content == big.read_bytes()
        assert hops.count("BufferedReader.read") == 1, hops  # the whole file at once
    finally:
        demo.close()
    assert server_hops.gradio_login_checks(demo.app), "Gradio's login check was not found on its routes"
    assert not any(name.endswith(".login_check") for name in hops), hops
