"""Gradio's queue as the app serves with it: without the traffic summary nobody reads, and with its two
background loops waiting for work instead of polling while the app is idle (benchmarks/HISTORY.md)."""
from __future__ import annotations

import asyncio
import logging
import time

import gradio as gr
from gradio import queueing as gr_queueing

log = logging.getLogger(__name__)


class ServingQueue(gr_queueing.Queue):
    """Gradio's queue without the traffic summary nobody reads.

    After every event Gradio 6.31 rebuilds its monitoring summary (a pandas DataFrame of up to the last
    10,000 events, grouped, with percentiles) in a worker thread: 1.3 ms of CPU per request at first,
    4.4 ms after 3,000 requests, 11 ms from 10,000 on. Only the /monitoring endpoints read it, and the app
    launches with them off; with them on this is Gradio's own.
    """

    def compute_analytics_summary(self, records):
        if not self.blocks.enable_monitoring:
            return self.cached_event_analytics_summary
        return super().compute_analytics_summary(records)


class _Slots(list):
    """Queue.active_jobs that calls ``freed`` when a running job's slot is given back (set to None)."""

    def __init__(self, slots: list, freed):
        super().__init__(slots)
        self._freed = freed

    def __setitem__(self, index, value):
        super().__setitem__(index, value)
        if value is None:
            self._freed()


class WakeOnWorkQueue(ServingQueue):
    """ServingQueue whose two background loops stop polling while the app is idle.

    In Gradio 6.31 the dispatch loop sleeps 1 ms and looks again whenever it has nothing to start (the queue
    is empty, or the prediction's concurrency limit is reached with requests waiting), and the progress loop
    looks at the running jobs every 10 ms whether any run or not: ~1,100 wake-ups a second of the event
    loop that also serves every HTTP request, ~5% of a core when the app is idle (benchmarks/HISTORY.md).
    Here, once nothing has been queued, started or finished for ``POLL_AFTER_WORK_S``, both loops wait
    instead until an event is queued (``push``), a running one gives its slot back (in ``process_events``,
    before that coroutine's own clean-up, which it awaits) or a job starts, looking anyway every
    ``LOOK_ANYWAY_S`` (1 s).
    While work is about they poll as Gradio's do: waiting on events alone made a lone request 7–9% slower on
    the 2-core VM (its waiting threads wake slower without the 1 ms ticks), though it used less CPU.
    The loop bodies are Gradio's, copied from 6.31.0; ``serving_queue`` keeps Gradio's own loops if that code
    has changed.
    """

    GRADIO_LOOPS_SHA256 = "98b1fe974d06ff34"  # of the two loops' source in Gradio 6.31.0 (gradio_loops_digest)
    _queued_or_freed: asyncio.Event | None = None  # made in the server's event loop, by whichever loop starts first
    _job_started: asyncio.Event | None = None
    POLL_AFTER_WORK_S = 2.0
    LOOK_ANYWAY_S = 1.0  # while waiting: what a wake-up this class failed to send would cost, at most
    _poll_until = 0.0  # time.monotonic() until which the loops poll

    def _make_events(self) -> None:
        if self._queued_or_freed is None:
            self._queued_or_freed, self._job_started = asyncio.Event(), asyncio.Event()

    def _keep_polling(self) -> None:
        self._poll_until = time.monotonic() + self.POLL_AFTER_WORK_S

    def _wake_dispatch(self) -> None:
        self._keep_polling()
        if self._queued_or_freed is not None:
            self._queued_or_freed.set()

    def start(self):
        self._queued_or_freed = self._job_started = None  # a relaunch runs the loops in a new event loop
        super().start()  # makes active_jobs, then schedules the loops
        self.active_jobs = _Slots(self.active_jobs, self._wake_dispatch)

    async def push(self, *args, **kwargs):
        try:
            return await super().push(*args, **kwargs)
        finally:
            self._wake_dispatch()

    async def process_events(self, *args, **kwargs):
        try:
            return await super().process_events(*args, **kwargs)
        finally:
            self._wake_dispatch()  # also for a run the join endpoint started outside active_jobs

    async def _wait(self, event: asyncio.Event, poll_s: float) -> None:
        if time.monotonic() < self._poll_until:
            await asyncio.sleep(poll_s)  # Gradio's own wait
            return
        try:
            await asyncio.wait_for(event.wait(), timeout=self.LOOK_ANYWAY_S)
        except TimeoutError:
            pass

    async def start_processing(self) -> None:
        from gradio.utils import run_coro_in_background, set_task_name

        self._make_events()
        try:
            while not self.stopped:
                self._queued_or_freed.clear()  # before looking: what comes after the look sets it again
                if len(self) == 0 or None not in self.active_jobs:
                    await self._wait(self._queued_or_freed, self.sleep_when_free)
                    continue
                async with self.delete_lock:
                    event_batch = self.get_events()
                if event_batch:  # from here to the else: Gradio 6.31.0's dispatch, unchanged
                    events, batch, concurrency_id = event_batch
                    self.active_jobs[self.active_jobs.index(None)] = events
                    event_queue = self.event_queue_per_concurrency_id[concurrency_id]
                    event_queue.current_concurrency += 1
                    start_time = time.time()
                    fn = events[0].fn
                    event_queue.start_times_per_fn[fn].add(start_time)
                    for event in events:
                        if (a := self.event_analytics.get(event._id)) is not None:
                            a["status"] = "processing"
                    process_event_task = run_coro_in_background(self.process_events, events, batch, start_time, fn)
                    set_task_name(process_event_task, events[0].session_hash, fn._id, events[0]._id, batch)
                    self._asyncio_tasks.add(process_event_task)
                    process_event_task.add_done_callback(self._asyncio_tasks.discard)
                    if self.live_updates:
                        self.broadcast_estimations(concurrency_id)
                    self._keep_polling()
                    self._job_started.set()
                else:
                    await self._wait(self._queued_or_freed, self.sleep_when_free)
        finally:
            self.stopped = True
            self._cancel_asyncio_tasks()

    async def start_progress_updates(self) -> None:
        self._make_events()
        while not self.stopped:
            self._job_started.clear()
            events = [evt for job in self.active_jobs if job is not None for evt in job]
            if len(events) == 0:
                await self._wait(self._job_started, self.progress_update_sleep_when_free)
                continue
            for event in events:  # Gradio 6.31.0's, unchanged
                if event.progress_pending and event.progress:
                    event.progress_pending = False
                    self.send_message(event, event.progress)
            await asyncio.sleep(self.progress_update_sleep_when_free)


def gradio_loops_digest() -> str:
    """Prefix of the sha256 of Gradio's two queue loops' source, which WakeOnWorkQueue replaces."""
    import hashlib
    import inspect

    source = "".join(inspect.getsource(f) for f in (gr_queueing.Queue.start_processing,
                                                    gr_queueing.Queue.start_progress_updates))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def serving_queue(demo: gr.Blocks) -> type[gr_queueing.Queue]:
    """Give ``demo``'s queue (made by ``demo.queue()``, before launch) the class it serves with: WakeOnWorkQueue,
    or ServingQueue with Gradio's own loops where those are not the code WakeOnWorkQueue copies (loudly)."""
    cls = WakeOnWorkQueue
    if gradio_loops_digest() != WakeOnWorkQueue.GRADIO_LOOPS_SHA256:
        log.warning("Gradio's queue loops are not the ones WakeOnWorkQueue was written for (Gradio %s); keeping "
                    "Gradio's own, which poll every millisecond", gr.__version__)
        cls = ServingQueue
    demo._queue.__class__ = cls
    return cls


def events_waiting(demo: gr.Blocks) -> int:
    """Events in ``demo``'s queue waiting for a free slot (any thread may ask; Gradio's ``len`` of its queue).
    1 where that cannot be read (another Gradio): callers that hold work back while the app is busy then hold
    it back."""
    try:
        return len(demo._queue)
    except (AttributeError, TypeError, RuntimeError):  # RuntimeError: a queue added while counting
        return 1
