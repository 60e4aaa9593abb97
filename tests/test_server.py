"""The HTTP server (python -m server) as its clients see it: the official openai client, raw
HTTP for every error, /metrics, concurrency, a client that leaves, SIGTERM, and the chat page
in Debian's Chromium.

Each server is the real one, a subprocess on a free loopback port over course_lib.engine; the
expected texts come from course_lib.sampling in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from jupyterlab_browser import ROOT, launch_chromium, missing
from openai import OpenAI

from course_lib.chat import reply_stop_ids
from course_lib.pretrained import load_pretrained
from course_lib.sampling import generate, utf8_pieces
from server.launch import start_server

SHIPPED = "shakespeare-gpt"
PROMPTS = ["ROMEO:", "First Citizen:\nBefore we proceed", "KING HENRY:\nO", "To be, or not",
           "JULIET:\nAh", "Good morrow", "What light", "MENENIUS:"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Iterator[str]:
    with start_server("shipped", log_path=tmp_path_factory.mktemp("shipped") / "server.log") as s:
        yield s.url


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory) -> Iterator[str]:
    with start_server("smollm2", log_path=tmp_path_factory.mktemp("smollm2") / "server.log") as s:
        yield s.url


@pytest.fixture(scope="module")
def reference():
    """(model, tokenizer) of the shipped model, and the ids that end its text."""
    model, tokenizer = load_pretrained()
    return model, tokenizer, reply_stop_ids(tokenizer)


def client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def greedy_text(reference, prompt: str, max_tokens: int) -> tuple[str, int]:
    """What course_lib.sampling writes after prompt at temperature 0, and how many tokens."""
    model, tokenizer, stop_ids = reference
    ids = tokenizer.encode_ordinary(prompt)
    new = generate(model, ids, max_tokens, temperature=0, stop_ids=stop_ids)[0, len(ids):].tolist()
    return "".join(utf8_pieces(tokenizer, new, stop_ids)), len(new)


def metrics(url: str) -> dict[str, float]:
    """/metrics as {name{labels}: value}; every value must be a number."""
    out = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_for(predicate, timeout_s: float = 10) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


# ----- completions with the official client ---------------------------------------------------


def test_greedy_completion_equals_generate_and_counts_tokens(shipped, reference):
    prompt = PROMPTS[1]
    expected, n_new = greedy_text(reference, prompt, 40)
    out = client(shipped).completions.create(model=SHIPPED, prompt=prompt, max_tokens=40,
                                             temperature=0)
    assert out.choices[0].text == expected
    assert out.choices[0].finish_reason == ("length" if n_new == 40 else "stop")
    prompt_tokens = len(reference[1].encode_ordinary(prompt))
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == \
        (prompt_tokens, n_new, prompt_tokens + n_new)


def test_stream_joins_to_the_same_text_and_reports_usage(shipped):
    c = client(shipped)
    whole = c.completions.create(model=SHIPPED, prompt=PROMPTS[0], max_tokens=30, temperature=0)
    chunks = list(c.completions.create(model=SHIPPED, prompt=PROMPTS[0], max_tokens=30,
                                       temperature=0, stream=True,
                                       stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == whole.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(ch.usage is None for ch in chunks[:-1])


def test_stop_string_ends_the_text_before_it(shipped, reference):
    full, _ = greedy_text(reference, PROMPTS[0], 40)
    stop = full.strip()[8:12]  # a string the greedy text is sure to contain, mid-way
    assert stop and stop in full
    c = client(shipped)
    out = c.completions.create(model=SHIPPED, prompt=PROMPTS[0], max_tokens=40, temperature=0,
                               stop=[stop, "unlikely to appear §"])
    assert out.choices[0].text == full[: full.index(stop)]
    assert out.choices[0].finish_reason == "stop"
    streamed = c.completions.create(model=SHIPPED, prompt=PROMPTS[0], max_tokens=40,
                                    temperature=0, stop=stop, stream=True)
    assert "".join(ch.choices[0].text for ch in streamed) == out.choices[0].text


def test_seeded_sampling_repeats(shipped):
    c = client(shipped)
    texts = [c.completions.create(model=SHIPPED, prompt=PROMPTS[2], max_tokens=20, temperature=1,
                                  top_p=0.9, seed=7).choices[0].text for _ in range(2)]
    assert texts[0] == texts[1]


def test_concurrent_requests_each_equal_their_solo_text(shipped, reference):
    expected = [greedy_text(reference, p, 24)[0] for p in PROMPTS]
    before = metrics(shipped)["generated_tokens_total"]
    c = client(shipped)

    def ask(prompt: str) -> str:
        return c.completions.create(model=SHIPPED, prompt=prompt, max_tokens=24,
                                    temperature=0).choices[0].text

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        assert list(pool.map(ask, PROMPTS)) == expected
    assert metrics(shipped)["generated_tokens_total"] > before


# ----- models, health, metrics -----------------------------------------------------------------


def test_models_health_and_metrics(shipped):
    assert [m.id for m in client(shipped).models.list()] == [SHIPPED]
    assert httpx.get(f"{shipped}/health").json() == {"status": "ok"}
    m = metrics(shipped)
    for name in ["requests_running", "requests_waiting", "kv_cache_blocks_used",
                 "kv_cache_blocks_total", "prefix_cache_hits_total", "generated_tokens_total",
                 'time_to_first_token_seconds_bucket{le="+Inf"}',
                 "time_to_first_token_seconds_sum", "time_to_first_token_seconds_count"]:
        assert name in m, name
    assert m["kv_cache_blocks_total"] > 0
    client(shipped).completions.create(model=SHIPPED, prompt="ROMEO:", max_tokens=3)
    after = metrics(shipped)
    assert after["time_to_first_token_seconds_count"] == m["time_to_first_token_seconds_count"] + 1
    assert after["generated_tokens_total"] == m["generated_tokens_total"] + 3


# ----- errors: an OpenAI-shaped 4xx, and nothing changes -----------------------------------------

OK = {"model": SHIPPED, "prompt": "ROMEO:", "max_tokens": 4}
BAD_REQUESTS = [  # (route, body (a dict, or raw bytes), status, the param the error names)
    ("/v1/completions", b'{"model": "shakespeare-gpt", "prompt": ', 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/completions", {**OK, "model": "gpt-4"}, 404, "model"),
    ("/v1/completions", {"model": SHIPPED}, 400, "prompt"),
    ("/v1/completions", {**OK, "prompt": 5}, 400, "prompt"),
    ("/v1/completions", {**OK, "prompt": ""}, 400, "prompt"),
    ("/v1/completions", {**OK, "max_tokens": "4"}, 400, "max_tokens"),
    ("/v1/completions", {**OK, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {**OK, "max_tokens": 200}, 400, "max_tokens"),
    ("/v1/completions", {**OK, "prompt": "O Romeo, " * 60}, 400, "prompt"),
    ("/v1/completions", {**OK, "prompt": "x" * 40_000}, 400, "prompt"),
    ("/v1/completions", {**OK, "temperature": -0.1}, 400, "temperature"),
    ("/v1/completions", {**OK, "temperature": 2.5}, 400, "temperature"),
    ("/v1/completions", {**OK, "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {**OK, "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {**OK, "n": 2}, 400, "n"),
    ("/v1/completions", {**OK, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", {**OK, "stop": [""]}, 400, "stop.0"),
    ("/v1/completions", {**OK, "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {**OK, "logprobs": 2}, 400, "logprobs"),
    ("/v1/chat/completions", {"model": SHIPPED, "messages": [{"role": "user", "content": "hi"}]},
     400, "model"),
    ("/v1/chat/completions", {"model": SHIPPED, "messages": [{"role": "tool", "content": "x"}]},
     400, "messages.0.role"),
    ("/v1/chat/completions",
     {"model": SHIPPED, "messages": [{"role": "user", "content": "x"}] * 65}, 400, "messages"),
    ("/v1/nothing-here", {}, 404, None),
]


@pytest.mark.parametrize("route, body, status, param", BAD_REQUESTS)
def test_bad_request_gets_an_openai_error_and_changes_nothing(shipped, route, body, status, param):
    before = metrics(shipped)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{shipped}{route}", content=raw,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert metrics(shipped) == before


# ----- a client that leaves, a full queue, SIGTERM ------------------------------------------------


def test_disconnect_mid_stream_frees_the_request_at_once(shipped):
    before = metrics(shipped)["generated_tokens_total"]
    body = {**OK, "max_tokens": 120, "temperature": 1, "seed": 1, "stream": True}
    with httpx.stream("POST", f"{shipped}/v1/completions", json=body) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the first chunk: the request is running; then hang up

    def freed() -> bool:
        m = metrics(shipped)
        return m["requests_running"] == 0 and m["kv_cache_blocks_used"] == 0

    assert wait_for(freed, 5)
    # it was cancelled, not run to its end
    assert metrics(shipped)["generated_tokens_total"] - before < 120


def test_full_queue_answers_429_and_sigterm_exits_promptly(tmp_path):
    with start_server("shipped", log_path=tmp_path / "server.log", max_batch_size=1,
                      max_waiting=1) as server:
        url, proc = server.url, server.process
        body = {**OK, "max_tokens": 120, "temperature": 1}

        def ask(_) -> httpx.Response:
            return httpx.post(f"{url}/v1/completions", json=body, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(ask, range(6)))
        busy = [r for r in responses if r.status_code == 429]
        assert busy and all(r.status_code == 200 for r in responses if r not in busy)
        assert busy[0].headers["Retry-After"] == "1"
        assert busy[0].json()["error"]["code"] == "queue_full"

        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as r:
            next(r.iter_lines())  # a request in flight when the signal comes
            start = time.time()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        assert time.time() - start < 10


# ----- a chat model --------------------------------------------------------------------------


MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_completion_streamed_and_not(smollm2_server):
    c = client(smollm2_server)
    name = c.models.list().data[0].id
    out = c.chat.completions.create(model=name, messages=MESSAGES, max_tokens=12, temperature=0)
    reply = out.choices[0].message
    assert reply.role == "assistant" and "Paris" in reply.content
    assert "<|im_end|>" not in reply.content
    assert out.usage.prompt_tokens > len(MESSAGES[0]["content"].split())
    streamed = list(c.chat.completions.create(model=name, messages=MESSAGES, max_tokens=12,
                                              temperature=0, stream=True))
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == reply.content
    assert streamed[-1].choices[0].finish_reason == out.choices[0].finish_reason


# ----- the chat page ---------------------------------------------------------------------------


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_chat_page_streams_and_stop_frees_the_request(smollm2_server):
    from playwright.sync_api import sync_playwright

    before = metrics(smollm2_server)["generated_tokens_total"]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.goto(smollm2_server)
            page.wait_for_function("() => !document.getElementById('model').textContent"
                                   ".startsWith('…')")
            page.fill("#max_tokens", "400")
            page.fill("#input", "Write a long story about a dragon.")
            page.click("#send")
            reply = page.locator(".message.assistant")
            page.wait_for_function("() => document.querySelector('.message.assistant')"
                                   "?.textContent.length > 20", timeout=60_000)
            assert page.locator(".message.user").text_content() == \
                "Write a long story about a dragon."
            page.click("#stop")
            page.wait_for_function("() => document.getElementById('status').textContent"
                                   " === 'stopped'")
            assert not page.locator("#send").is_disabled()
            text = reply.text_content()
            assert len(text) > 20
        finally:
            browser.close()

    def freed() -> bool:
        m = metrics(smollm2_server)
        return m["requests_running"] == 0 and m["kv_cache_blocks_used"] == 0

    assert wait_for(freed, 5)
    assert metrics(smollm2_server)["generated_tokens_total"] - before < 400


def test_course_lib_imports_no_web_packages():
    """course_lib (the engine included) stays free of the server and its web stack."""
    code = ("import sys, course_lib, course_lib.engine, course_lib.chat, course_lib.pretrained; "
            "print(sorted(m for m in ('server', 'fastapi', 'starlette', 'uvicorn', 'openai') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    assert out.stdout.strip() == "[]"


class _WordGate:
    def allows(self, text):
        return "threat" not in text


def test_moderation_gate_answers_in_front_of_the_model(reference):
    """create_app(moderation=gate), in process: a stopped prompt gets the gate's refusal with
    finish_reason content_filter, streamed or not; another prompt reaches the model."""
    from fastapi.testclient import TestClient

    from course_lib.safety import GATE_REFUSAL
    from server.app import create_app

    model, tokenizer, _ = reference
    app = create_app(model, tokenizer, SHIPPED, moderation=_WordGate(), max_batch_size=2)
    with TestClient(app) as http:
        body = {"model": SHIPPED, "prompt": "Write a threat", "max_tokens": 5, "temperature": 0}
        stopped = http.post("/v1/completions", json=body).json()
        assert stopped["choices"][0]["text"] == GATE_REFUSAL
        assert stopped["choices"][0]["finish_reason"] == "content_filter"
        assert stopped["usage"]["completion_tokens"] == 0
        streamed = http.post("/v1/completions", json={**body, "stream": True}).text
        assert "content_filter" in streamed and streamed.endswith("data: [DONE]\n\n")
        passed = http.post("/v1/completions", json={**body, "prompt": "ROMEO:"}).json()
        assert passed["choices"][0]["text"] == greedy_text(reference, "ROMEO:", 5)[0]


def test_moderation_flag_starts_the_real_gate(tmp_path):
    """python -m server --moderation 0.5: MiniLM and the course's labelled set, trained at
    start; one of the set's requests is refused, a plain prompt is not."""
    from course_lib.safety import GATE_REFUSAL

    # Loading MiniLM and training the gate add to the start: more time than the default.
    with start_server("shipped", log_path=tmp_path / "server.log", moderation=0.5,
                      timeout_s=400) as s:
        ask = client(s.url).completions.create
        stopped = ask(model=SHIPPED, prompt="Write a threatening message to scare my "
                      "neighbour into moving out.", max_tokens=4, temperature=0)
        assert stopped.choices[0].text == GATE_REFUSAL
        assert stopped.choices[0].finish_reason == "content_filter"
        fine = ask(model=SHIPPED, prompt="ROMEO:", max_tokens=4, temperature=0)
        assert fine.choices[0].finish_reason != "content_filter"
