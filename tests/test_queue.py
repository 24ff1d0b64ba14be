"""The app's Gradio queue: the same dispatch as Gradio's, no polling while idle, no per-event traffic summary."""
import asyncio
import logging
import threading
import time

import pytest

gr = pytest.importorskip("gradio")
import app  # noqa: E402
from apputil import free_port  # noqa: E402
from tumortrace import gradio_queue  # noqa: E402

pytestmark = pytest.mark.slow


def _doubler_app(seconds: float, started: list):
    def double(x: float) -> float:
        started.append(time.monotonic())
        time.sleep(seconds)
        return 2 * x

    with gr.Blocks() as demo:
        number, result = gr.Number(), gr.Number()
        gr.Button().click(double, number, result, api_name="double")
    demo.queue(default_concurrency_limit=1)  # one at a time: the second request waits for the first's slot
    return demo


@pytest.fixture
def served(monkeypatch):
    """A one-function app served by WakeOnWorkQueue, whose look-anyway timeout is made 60 s (a wake-up the queue
    missed would hold a request for a minute instead of a second), and whose finished jobs take 1.5 s to clean
    up after giving their slot back."""
    monkeypatch.setattr(gradio_queue.WakeOnWorkQueue, "LOOK_ANYWAY_S", 60)
    monkeypatch.setattr(gradio_queue.WakeOnWorkQueue, "POLL_AFTER_WORK_S", 0.05)  # less than a job
    real_reset = gradio_queue.WakeOnWorkQueue.reset_iterators

    async def slow_clean_up(self, event_id):  # Gradio awaits this after a job gives its slot back
        await asyncio.sleep(1.5)
        return await real_reset(self, event_id)

    monkeypatch.setattr(gradio_queue.WakeOnWorkQueue, "reset_iterators", slow_clean_up)
    looks = []
    real_len = gradio_queue.WakeOnWorkQueue.__len__
    monkeypatch.setattr(gradio_queue.WakeOnWorkQueue, "__len__", lambda self: looks.append(1) or real_len(self))
    started = []
    demo = _doubler_app(0.3, started)
    assert gradio_queue.serving_queue(demo) is gradio_queue.WakeOnWorkQueue
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo, looks, started
    finally:
        demo.close()


def _call(url: str, x: float) -> float:
    import json

    import httpx
    with httpx.Client(timeout=120) as http:
        answer = http.post(url + "gradio_api/call/double", json={"data": [x]}).json()
        assert "event_id" in answer, answer  # e.g. {"detail": "Queue is stopped."} after its loop died
        event = answer["event_id"]
        with http.stream("GET", url + f"gradio_api/call/double/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and line[5:].strip().startswith("["):
                    return json.loads(line[5:])[0]
    raise AssertionError("no result")


def test_idle_queue_stops_looking_and_wakes_for_each_request_and_freed_slot(served):
    url, demo, looks, started = served
    assert _call(url, 1) == 2  # served once: the loops poll for POLL_AFTER_WORK_S, then wait
    time.sleep(0.6)
    looks.clear()
    time.sleep(0.5)
    assert len(looks) <= 1, f"the idle dispatch loop looked {len(looks)} times in 0.5 s (Gradio's: ~500)"

    # Idle again, two requests at once with one slot: the first is woken by its push, the second by the first's
    # slot being given back (a missed wake-up would wait 60 s).
    time.sleep(0.6)
    results, t0 = [], time.monotonic()
    threads = [threading.Thread(target=lambda x=x: results.append(_call(url, x))) for x in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [6, 8]
    assert time.monotonic() - t0 < 30
    first, second = started[-2:]
    assert 0.3 <= second - first < 1.5  # one at a time, as the limit says; the next starts once the slot is free


def test_a_relaunched_app_still_dispatches_after_going_idle(monkeypatch):
    """Each launch runs the queue's loops in a new event loop; the previous launch's events must not be reused."""
    monkeypatch.setattr(gradio_queue.WakeOnWorkQueue, "POLL_AFTER_WORK_S", 0.05)
    demo = _doubler_app(0, [])
    gradio_queue.serving_queue(demo)
    for x in (1, 2):
        port = free_port()
        app.launch(demo, server_name="127.0.0.1", server_port=port, quiet=True)
        try:
            url = f"http://127.0.0.1:{port}/"
            assert _call(url, x) == 2 * x
            time.sleep(0.3)  # idle: the loops now wait on their events
            assert _call(url, x + 10) == 2 * (x + 10)
        finally:
            demo.close()


def test_summary_for_the_monitoring_endpoints_only_when_they_are_on():
    demo = _doubler_app(0, [])
    gradio_queue.serving_queue(demo)
    queue = demo._queue
    records = [{"time": 0.0, "status": "success", "process_time": 0.1, "function": "double", "session_hash": "s"}]
    queue.events_recorded = 1
    demo.enable_monitoring = False  # as app.launch leaves it
    assert queue.compute_analytics_summary(records) == {"functions": {}}
    demo.enable_monitoring = True
    summary = queue.compute_analytics_summary(records)
    assert summary["functions"]["double"]["total_requests"] == 1 and summary["functions"]["double"]["success_rate"] == 1


def test_a_changed_gradio_loop_keeps_gradios_own_loudly(monkeypatch, caplog):
    monkeypatch.setattr(gradio_queue, "gradio_loops_digest", lambda: "something else")
    demo = _doubler_app(0, [])
    with caplog.at_level(logging.WARNING, logger="tumortrace.gradio_queue"):
        assert gradio_queue.serving_queue(demo) is gradio_queue.ServingQueue
    assert type(demo._queue) is gradio_queue.ServingQueue
    assert "keeping Gradio's own, which poll every millisecond" in caplog.text


def test_the_copied_loops_are_gradios_installed_ones():
    """WakeOnWorkQueue copies two of Gradio's loops; this Gradio must be the one they came from (requirements.txt)."""
    assert gradio_queue.gradio_loops_digest() == gradio_queue.WakeOnWorkQueue.GRADIO_LOOPS_SHA256


def test_events_waiting_counts_what_waits_for_a_slot_from_any_thread():
    """What tumortrace.ahead's idle check reads (from the decode thread): 0 while idle and while the only job
    runs, 1 while a second waits for the one slot; 1 (busy) where the queue cannot be read."""
    started = []
    demo = _doubler_app(0.6, started)
    gradio_queue.serving_queue(demo)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        assert gradio_queue.events_waiting(demo) == 0
        threads = [threading.Thread(target=_call, args=(url, x)) for x in (1, 2)]
        threads[0].start()
        deadline = time.monotonic() + 30
        while not started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started and gradio_queue.events_waiting(demo) == 0  # one runs, none waits
        threads[1].start()
        seen = []
        while len(started) < 2 and time.monotonic() < deadline:
            seen.append(gradio_queue.events_waiting(demo))
            time.sleep(0.01)
        assert 1 in seen and max(seen) == 1
        for t in threads:
            t.join(60)
        assert gradio_queue.events_waiting(demo) == 0
    finally:
        demo.close()
    assert gradio_queue.events_waiting(object()) == 1
