"""Lesson 14's checks: a right and several wrong answers for each."""

import json

from widgets.checks.serving import (
    SSE_TEXT,
    check_blocks_needed,
    check_parse_sse,
    check_users_per_gpu,
)


def test_blocks_needed():
    assert check_blocks_needed(lambda n, b: -(-n // b))
    assert check_blocks_needed(lambda n, b: float(-(-n // b)))
    fb = check_blocks_needed(lambda n, b: n // b)
    assert not fb and "Round the division up" in fb.message
    fb = check_blocks_needed(lambda n, b: n // b + 1)
    assert not fb and "no extra block" in fb.message
    fb = check_blocks_needed(lambda n, b: n / b)
    assert not fb and "whole number" in fb.message
    assert not check_blocks_needed(lambda n, b: None)


def _parse(text, stop=True, decode=True, skip_comments=True):
    out = []
    for line in text.splitlines():
        if skip_comments and not line.startswith("data:"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]" and stop:
            break
        if data and data != "[DONE]":
            out.append(json.loads(data) if decode else data)
    return out


def test_parse_sse():
    assert check_parse_sse(_parse)
    fb = check_parse_sse(lambda t: _parse(t, decode=False))
    assert not fb and "json.loads" in fb.message
    fb = check_parse_sse(lambda t: _parse(t, stop=False))
    assert not fb and "[DONE]" in fb.message
    fb = check_parse_sse(lambda t: _parse(t)[:2])
    assert not fb and "2 of the 3" in fb.message
    # splitting on "data:" anywhere breaks on the chunk whose text holds "data:"
    fb = check_parse_sse(lambda t: [json.loads(p) for p in t.split("data:")[1:2]])
    assert not fb
    assert "[DONE]" in SSE_TEXT and SSE_TEXT.count("data:") == 6


def test_users_per_gpu():
    assert check_users_per_gpu(137)
    assert "Round down" in check_users_per_gpu(138).message
    assert "weights live on the same GPU" in check_users_per_gpu(170).message
    assert "4 key/value heads" in check_users_per_gpu(19).message
    assert "multiply by 2" in check_users_per_gpu(275).message
    assert "not 4" in check_users_per_gpu(68).message
    assert "Not 3" in check_users_per_gpu(3).message
