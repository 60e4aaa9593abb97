"""One request's life in the engine: submitted, its tokens turned into text, freed when it ends."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import Request

from course_lib.engine import QueueFull
from course_lib.sampling import SamplingParams
from server.errors import APIError
from server.limits import DISCONNECT_POLL_S, RETRY_AFTER_S
from server.runner import Draining, EngineRunner
from server.text import TextStream


class Generation:
    """A request's tokens as text deltas, with its usage and finish reason once it ends.

    Whatever ends the iteration early (a stop string, a client that left, a cancelled route)
    cancels the request in the engine at once, so its batch slot and KV blocks are free for
    the next step.
    """

    def __init__(self, runner: EngineRunner, tokenizer, params: SamplingParams,
                 stop: tuple[str, ...], id_prefix: str,
                 on_first_token: Callable[[float], None]) -> None:
        self.id = f"{id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._runner = runner
        self._text = TextStream(tokenizer, params.stop_ids, stop)
        self._params = params
        self._on_first_token = on_first_token
        self._started = time.perf_counter()
        self._events: asyncio.Queue | None = None
        self.completion_tokens = 0
        self.finish_reason: str | None = None  # None until it ends; stays None if the client left

    async def start(self, prompt_ids: list[int]) -> None:
        """Admit the request, or raise the APIError that says why not."""
        try:
            self._events = await self._runner.submit(prompt_ids, self._params, self.id)
        except QueueFull as e:
            raise APIError(429, f"the server is busy ({e}); retry in a moment",
                           type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except Draining:
            raise APIError(503, "the server is shutting down", type="server_error",
                           code="shutting_down") from None
        except (ValueError, TypeError) as e:
            raise APIError(400, str(e), code="invalid_value") from None

    async def deltas(self, request: Request | None = None) -> AsyncIterator[str]:
        """The reply's text, each piece once it is certain.

        request: watch it for a client that disconnects (a streaming response needs not:
        Starlette cancels the stream when its client leaves).
        """
        finished = False
        try:
            while True:
                event = await self._next_event(request)
                if event is None:  # the client left
                    return
                if isinstance(event, Exception):  # the engine failed (logged by the runner)
                    raise event
                if event.token is not None:
                    if self.completion_tokens == 0:
                        self._on_first_token(time.perf_counter() - self._started)
                    self.completion_tokens += 1
                    piece = self._text.add(event.token)
                    if self._text.stopped:
                        self.finish_reason = "stop"
                        if piece:
                            yield piece
                        return
                    if piece:
                        yield piece
                if event.finish_reason is not None:
                    finished = True
                    self.finish_reason = event.finish_reason
                    piece = self._text.finish()
                    if piece:
                        yield piece
                    return
        finally:
            if not finished:
                self._runner.cancel(self.id)

    async def _next_event(self, request: Request | None):
        """The next TokenEvent, or None once request's client has disconnected."""
        while True:
            try:
                return await asyncio.wait_for(self._events.get(),
                                              None if request is None else DISCONNECT_POLL_S)
            except TimeoutError:
                if await request.is_disconnected():
                    return None
