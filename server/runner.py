"""The engine's driver: one thread runs engine.step() while work exists and hands each
request's TokenEvents to the asyncio loop that waits for them."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading

from course_lib.engine import Engine, EngineStats
from course_lib.sampling import SamplingParams

log = logging.getLogger(__name__)


class Draining(Exception):
    """The server is shutting down and admits no new request."""


class EngineRunner:
    """Owns the engine: only its thread calls it, so the engine needs no lock.

    Routes send commands (add, cancel) through a queue that the thread reads between steps,
    so a request joins the batch at the next step and never waits for a lock held through a
    forward pass. Each request's events go to its asyncio.Queue through
    loop.call_soon_threadsafe, one hand-off per step.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self._loop = loop
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._queues: dict[str, asyncio.Queue] = {}  # the engine thread's own
        self._admitting = True
        self.stats: EngineStats = engine.stats()  # refreshed by the thread after every step
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    @property
    def admitting(self) -> bool:
        return self._admitting

    async def submit(self, prompt_ids: list[int], params: SamplingParams,
                     request_id: str) -> asyncio.Queue:
        """Add a request to the engine; its TokenEvents arrive in the returned queue.

        Raises what engine.add_request raises (ValueError, TypeError, QueueFull), or Draining.
        """
        if not self._admitting:
            raise Draining()
        events: asyncio.Queue = asyncio.Queue()
        added = self._loop.create_future()
        self._commands.put(("add", (prompt_ids, params, request_id, events, added)))
        try:
            await added
        except asyncio.CancelledError:  # the client left while the request was being added
            self.cancel(request_id)
            raise
        return events

    def cancel(self, request_id: str) -> None:
        """Free the request's batch slot and KV blocks at the engine's next turn."""
        self._commands.put(("cancel", request_id))

    def stop_admitting(self) -> None:
        self._admitting = False

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after the step it is in."""
        self._admitting = False
        self._commands.put(("stop", None))
        self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            while self._apply_commands():
                if self._engine.has_unfinished():
                    self._step()
                self.stats = self._engine.stats()
        except RuntimeError:  # the event loop closed under us: the server is gone
            log.exception("engine thread stopped")

    def _apply_commands(self) -> bool:
        """Apply every queued command (waiting for one when the engine is idle); False: stop."""
        idle = not self._engine.has_unfinished()
        try:
            commands = [self._commands.get(block=idle)]
        except queue.Empty:
            return True
        while not self._commands.empty():
            commands.append(self._commands.get())
        for kind, arg in commands:
            if kind == "stop":
                return False
            if kind == "cancel":
                self._queues.pop(arg, None)  # its route has stopped listening
                self._engine.cancel(arg)
            else:
                self._add(*arg)
        return True

    def _add(self, prompt_ids, params, request_id, events, added) -> None:
        try:
            self._engine.add_request(prompt_ids, params, request_id=request_id)
        except Exception as e:  # the route turns it into a 4xx
            self._loop.call_soon_threadsafe(_settle, added, e)
            return
        self._queues[request_id] = events
        self._loop.call_soon_threadsafe(_settle, added, None)

    def _step(self) -> None:
        try:
            events = self._engine.step()
        except Exception as e:  # a bug, not a client's error: fail every request, keep serving
            log.exception("engine.step() failed")
            failed = list(self._queues.items())
            for request_id, _ in failed:
                self._engine.cancel(request_id)
            self._queues.clear()
            self._loop.call_soon_threadsafe(_deliver, [(q, e) for _, q in failed])
            return
        out = []
        for event in events:
            events_queue = self._queues.get(event.request_id)
            if events_queue is None:  # cancelled by its route: nobody listens
                continue
            if event.finish_reason is not None:
                del self._queues[event.request_id]
            out.append((events_queue, event))
        if out:
            self._loop.call_soon_threadsafe(_deliver, out)


def _settle(future: asyncio.Future, error: Exception | None) -> None:
    if not future.done():  # cancelled if its route was
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _deliver(items: list) -> None:
    for events, event in items:
        events.put_nowait(event)
