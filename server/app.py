"""create_app: OpenAI's routes (completions, chat, models), health, metrics and the chat page
over one engine."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from course_lib.chat import IM_START, encode_chat, reply_stop_ids
from course_lib.engine import Engine
from course_lib.model import GPT
from course_lib.safety import GATE_REFUSAL
from course_lib.sampling import SamplingParams
from server.errors import APIError, install_error_handlers
from server.generation import Generation
from server.limits import DEFAULT_CHAT_TOKENS, DEFAULT_COMPLETION_TOKENS, MAX_CHARS
from server.metrics import CONTENT_TYPE, Metrics
from server.runner import EngineRunner
from server.schemas import ChatRequest, CompletionRequest, GenerationRequest

STATIC = Path(__file__).parent / "static"
# SamplingParams' field names, where an error names one, as the request calls it.
_PARAM_NAMES = {"max_new_tokens": "max_tokens"}


def create_app(model: GPT, tokenizer, model_name: str, moderation=None,
               **engine_options) -> FastAPI:
    """The server's app: an Engine(model, **engine_options) driven by one thread while it runs.

    tokenizer: the model's (course_lib's BPETokenizer); a chat model's tokenizer has
    SmolLM2's <|im_start|> marker, and only then is /v1/chat/completions open.
    moderation: None (off), or a gate with allows(text) -> bool (course_lib.safety's
    ModerationGate) that reads the prompt, or the last user message, before the model does; a
    text it stops gets GATE_REFUSAL with finish_reason "content_filter", and the model never
    runs.
    """
    is_chat = IM_START in (getattr(tokenizer, "special_tokens", None) or {})
    context = model.config.block_size
    stop_ids = tuple(reply_stop_ids(tokenizer))  # a chat model ends a reply with <|im_end|>

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = EngineRunner(Engine(model, **engine_options), asyncio.get_running_loop())
        app.state.runner = runner
        try:
            yield
        finally:
            runner.close()

    app = FastAPI(title=f"course_lib server: {model_name}", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    install_error_handlers(app)
    metrics = Metrics(lambda: app.state.runner.stats)

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(404, f"the model {name!r:.80} does not exist; this server has "
                           f"{model_name!r}", param="model", code="model_not_found")

    def sampling(body: GenerationRequest, prompt_tokens: int, prompt_param: str,
                 max_tokens: int | None, default_tokens: int) -> SamplingParams:
        """The request's SamplingParams, once its prompt and max_tokens fit the context."""
        room = context - prompt_tokens
        if room < 1:
            raise APIError(400, f"the {prompt_param} is {prompt_tokens} tokens long, and the "
                           f"model reads at most {context} (its answer included)",
                           param=prompt_param, code="context_length_exceeded")
        if max_tokens is not None and max_tokens > room:
            raise APIError(400, f"max_tokens is {max_tokens}, but the {prompt_param}'s "
                           f"{prompt_tokens} tokens leave room for {room} in the model's "
                           f"context of {context}", param="max_tokens",
                           code="context_length_exceeded")
        try:
            return SamplingParams(
                max_new_tokens=min(default_tokens, room) if max_tokens is None else max_tokens,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_p=body.top_p, top_k=body.top_k, seed=body.seed,
                presence_penalty=body.presence_penalty or 0.0,
                frequency_penalty=body.frequency_penalty or 0.0, stop_ids=stop_ids)
        except (ValueError, TypeError) as e:  # SamplingParams' message starts with the field
            field = str(e).split()[0]
            raise APIError(400, str(e), param=_PARAM_NAMES.get(field, field),
                           code="invalid_value") from None

    async def respond(body: GenerationRequest, request: Request, prompt_ids: list[int],
                      params: SamplingParams, chat: bool, gated_text: str = "") -> Response:
        if moderation is not None and gated_text and not moderation.allows(gated_text):
            return gated(body, chat, len(prompt_ids))
        gen = Generation(app.state.runner, tokenizer, params, body.stop_strings(),
                         "chatcmpl" if chat else "cmpl", metrics.time_to_first_token.observe)
        await gen.start(prompt_ids)

        def usage() -> dict:
            return {"prompt_tokens": len(prompt_ids), "completion_tokens": gen.completion_tokens,
                    "total_tokens": len(prompt_ids) + gen.completion_tokens}

        def envelope(kind: str, choices: list[dict]) -> dict:
            return {"id": gen.id, "object": kind, "created": gen.created, "model": model_name,
                    "choices": choices}

        if not body.stream:
            text = "".join([piece async for piece in gen.deltas(request)])
            if gen.finish_reason is None:  # nobody is there to read an answer
                return Response(status_code=499)
            kind = "chat.completion" if chat else "text_completion"
            choice = _whole_choice(chat, text, gen.finish_reason)
            return JSONResponse({**envelope(kind, [choice]), "usage": usage()})

        include_usage = body.stream_options is not None and body.stream_options.include_usage

        def chunk(piece: str | None, finish_reason: str | None = None, first: bool = False) -> str:
            choice = _chunk_choice(chat, piece, finish_reason, first)
            data = envelope("chat.completion.chunk" if chat else "text_completion", [choice])
            if include_usage:  # OpenAI: every chunk has usage null, and a last one has it
                data["usage"] = None
            return _sse(data)

        async def events() -> AsyncIterator[str]:
            if chat:
                yield chunk("", first=True)
            async for piece in gen.deltas():
                yield chunk(piece)
            yield chunk(None, gen.finish_reason)
            if include_usage:
                yield _sse({**envelope(
                    "chat.completion.chunk" if chat else "text_completion", []),
                    "usage": usage()})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    def gated(body: GenerationRequest, chat: bool, prompt_tokens: int) -> Response:
        """The answer to a request the moderation gate stopped: a fixed refusal."""
        ident = f"{'chatcmpl' if chat else 'cmpl'}-gated-{uuid.uuid4().hex[:12]}"
        kind = "chat.completion" if chat else "text_completion"
        envelope = {"id": ident, "created": int(time.time()), "model": model_name}
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 0,
                 "total_tokens": prompt_tokens}
        if not body.stream:
            choice = _whole_choice(chat, GATE_REFUSAL, "content_filter")
            return JSONResponse({**envelope, "object": kind, "choices": [choice],
                                 "usage": usage})
        choice = _chunk_choice(chat, GATE_REFUSAL, "content_filter", first=True)
        events = [_sse({**envelope, "object": kind + (".chunk" if chat else ""),
                        "choices": [choice]}), "data: [DONE]\n\n"]
        return StreamingResponse(iter(events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_model(body.model)
        prompt_ids = tokenizer.encode_ordinary(body.prompt)  # special-token text stays text
        params = sampling(body, len(prompt_ids), "prompt", body.max_tokens,
                          DEFAULT_COMPLETION_TOKENS)
        return await respond(body, request, prompt_ids, params, chat=False,
                             gated_text=body.prompt)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        check_model(body.model)
        if not is_chat:
            raise APIError(400, f"{model_name} is not a chat model: use /v1/completions",
                           param="model", code="not_a_chat_model")
        messages = [m.model_dump() for m in body.messages]
        if sum(len(m["content"]) for m in messages) > MAX_CHARS:
            raise APIError(400, f"the messages hold more than {MAX_CHARS} characters together",
                           param="messages", code="too_long")
        prompt_ids = encode_chat(tokenizer, messages)
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = sampling(body, len(prompt_ids), "messages", max_tokens, DEFAULT_CHAT_TOKENS)
        users = [m["content"] for m in messages if m["role"] == "user"]
        return await respond(body, request, prompt_ids, params, chat=True,
                             gated_text=users[-1] if users else "")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{
            "id": model_name, "object": "model", "created": 0, "owned_by": "course_lib",
            "max_model_len": context, "chat": is_chat}]}

    @app.get("/health")
    async def health() -> dict:
        if not app.state.runner.admitting:
            raise APIError(503, "the server is shutting down", type="server_error",
                           code="shutting_down")
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _whole_choice(chat: bool, text: str, finish_reason: str | None) -> dict:
    """The one choice of a whole (not streamed) completion or chat completion."""
    if chat:
        return {"index": 0, "message": {"role": "assistant", "content": text},
                "logprobs": None, "finish_reason": finish_reason}
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


def _chunk_choice(chat: bool, piece: str | None, finish_reason: str | None,
                  first: bool = False) -> dict:
    """The choice of one streamed chunk; a chat's first chunk also names the assistant."""
    if chat:
        delta = {} if piece is None else {"content": piece}
        if first:
            delta["role"] = "assistant"
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish_reason}


def _sse(data: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
