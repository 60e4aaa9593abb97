"""Checks for lesson 14's exercises: blocks a paged KV cache needs, reading a server-sent-event
stream, and how many users a GPU holds."""

from __future__ import annotations

import functools
import json

from course_lib.engine import Engine
from course_lib.fast_attention import kv_cache_bytes
from course_lib.sampling import SamplingParams
from widgets.checks import shipped
from widgets.feedback import (
    A_NUMBER,
    Feedback,
    a_function,
    as_int,
    call_learner,
    exercise,
    right,
    shown,
    wrong,
)

# Exercise 1: (tokens, block size) pairs; the engine's block table gives the expected counts.
BLOCK_CASES = [(1, 16), (16, 16), (17, 16), (100, 16), (33, 8), (5, 1), (64, 4), (0, 16)]


@functools.lru_cache(maxsize=1)
def _engine_blocks() -> tuple[int, ...]:
    """How many blocks the engine's block table holds once each case's n tokens are computed."""
    model, _ = shipped()
    out = []
    for n, b in BLOCK_CASES:
        if n == 0:  # a request always has a prompt; no tokens take no blocks
            out.append(0)
            continue
        engine = Engine(model, max_batch_size=1, kv_block_size=b, num_kv_blocks=128)
        rid = engine.add_request([1] * n, SamplingParams(max_new_tokens=2, temperature=0))
        engine.step()  # the prompt's n positions are now in the cache
        out.append(len(engine.block_table(rid)))
    return tuple(out)


@exercise(**a_function("blocks_needed(n_tokens, block_size)"))
def check_blocks_needed(fn: object) -> Feedback:
    """Exercise 1: fn(n_tokens, block_size) -> how many KV blocks hold n_tokens positions.

    Exercise text to paste:

    A paged KV cache hands out memory a block of `block_size` positions at a time. Write
    `blocks_needed(n_tokens, block_size)`: how many blocks a sequence of `n_tokens` tokens
    occupies. The check compares it with the block tables of `course_lib.engine.Engine`.

        def blocks_needed(n_tokens, block_size):
            ...  # return a whole number of blocks

        check_blocks_needed(blocks_needed)

    Solution:

        def blocks_needed(n_tokens, block_size):
            return -(-n_tokens // block_size)  # divide, rounding up: a started block is a block

        check_blocks_needed(blocks_needed)
    """
    expected = _engine_blocks()
    for (n, b), want in zip(BLOCK_CASES, expected, strict=True):
        on = f"for {n} tokens in blocks of {b}"
        got, failed = call_learner(fn, n, b, on=on, if_none=(
            "Your function returns None: return the number of blocks."))
        if failed is not None:
            return failed
        count = as_int(got)
        if count is None:
            return wrong(f"{on} your function returned {shown(got)}; return a whole number "
                         "of blocks (an int).")
        if count == want:
            continue
        if count == n // b:
            return wrong(f"{on} you give {count}, the engine uses {want}: a partly filled "
                         "block is still a whole block. Round the division up.")
        if count == n // b + 1:
            return wrong(f"{on} you give {count}, the engine uses {want}: when the tokens fill "
                         "their blocks exactly, no extra block is needed.")
        return wrong(f"{on} you give {count}; the engine's block table holds {want}.")
    return right("Your counts equal the engine's block tables: n tokens take ceil(n / b) "
                 "blocks, so at most b - 1 positions of a sequence are ever wasted.")


# Exercise 2: a stream as the course's server (and OpenAI's) sends it; a comment line, a
# multi-line event and text after [DONE] test the rules.
_CHUNKS = [
    {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "O",
                                                               "finish_reason": None}]},
    {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": " Romeo,",
                                                               "finish_reason": None}]},
    {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": " data:",
                                                               "finish_reason": "length"}]},
]
SSE_TEXT = (
    f"data: {json.dumps(_CHUNKS[0])}\n\n"
    ": a comment line, which a client ignores\n\n"
    f"data: {json.dumps(_CHUNKS[1])}\n\n"
    f"data: {json.dumps(_CHUNKS[2])}\n\n"
    "data: [DONE]\n\n"
    f"data: {json.dumps(_CHUNKS[0])}\n\n"
)


@exercise(**a_function("parse_sse(text)"))
def check_parse_sse(fn: object) -> Feedback:
    """Exercise 2: fn(text) -> the JSON chunks of a server-sent-event stream, until [DONE].

    Exercise text to paste:

    A streamed completion arrives as server-sent events: lines `data: <json>`, each event ended
    by a blank line; lines starting with `:` are comments; `data: [DONE]` ends the stream.
    Write `parse_sse(text)` returning the list of chunks (as dicts, decoded with `json.loads`)
    before `[DONE]`. The check gives it a stream like the server's `SSE_TEXT`.

        def parse_sse(text):
            ...  # return a list of dicts

        check_parse_sse(parse_sse)

    Solution:

        def parse_sse(text):
            import json

            chunks = []
            for line in text.splitlines():
                if not line.startswith("data:"):
                    continue  # blank lines end events; ':' lines are comments
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    break
                chunks.append(json.loads(data))
            return chunks

        check_parse_sse(parse_sse)
    """
    got, failed = call_learner(fn, SSE_TEXT, on="on a stream of 3 chunks",
                               if_none="Your function returns None: return the list of chunks.")
    if failed is not None:
        return failed
    if not isinstance(got, (list, tuple)):
        return wrong(f"Return a list of the chunks (dicts); got {shown(got)}.")
    items = list(got)
    if items == _CHUNKS:
        return right("Three chunks, the comment skipped and nothing read after [DONE]: joining "
                     "their choices[0]['text'] gives 'O Romeo, data:'. This is what the openai "
                     "client does for you with stream=True.")
    if items and all(isinstance(i, str) for i in items):
        return wrong("Your list holds strings: decode each event's data with json.loads into a "
                     "dict.")
    if "[DONE]" in [i for i in items if isinstance(i, str)] or len(items) == 4 and \
            items[:3] == _CHUNKS:
        return wrong("[DONE] is not a chunk: it says the stream has ended. Stop there.")
    if len(items) > 3 and items[:3] == _CHUNKS:
        return wrong("Stop at data: [DONE]: what comes after it is not part of the stream.")
    if len(items) < 3 and all(i in _CHUNKS for i in items):
        return wrong(f"You found {len(items)} of the 3 chunks. Read every line that starts "
                     "with 'data:' (the third one's text itself contains 'data:').")
    return wrong(f"Expected the 3 chunks before [DONE] as dicts; got {len(items)} items, "
                 f"starting {shown(items[:1])}.")


# Exercise 3: Qwen2.5-7B's published config (config.json: num_hidden_layers 28,
# num_attention_heads 28, num_key_value_heads 4, hidden_size 3584), about 7.6 billion
# parameters, everything in bfloat16, one GPU of 80 GB (80e9 bytes), 8,192 tokens per user.
QWEN_7B = {"n_layer": 28, "n_head": 28, "n_kv_head": 4, "head_dim": 128}
QWEN_PARAMETERS = 7.6e9
GPU_BYTES = 80e9
USER_TOKENS = 8192


def users_per_gpu(n_layer: int, n_kv_head: int, head_dim: int, tokens: int, parameters: float,
                  gpu_bytes: float, bytes_per_value: int = 2) -> int:
    """Whole users whose full KV cache fits in what the weights leave of the GPU's memory."""
    per_user = kv_cache_bytes(n_layer, n_kv_head, head_dim, tokens,
                              bytes_per_value=bytes_per_value)
    return int((gpu_bytes - parameters * bytes_per_value) // per_user)


@exercise("Replace None with the number of users.", **A_NUMBER)
def check_users_per_gpu(x: float) -> Feedback:
    """Exercise 3: users of Qwen2.5-7B at 8,192 tokens each on one 80 GB GPU, in bfloat16."""
    c = QWEN_7B
    expected = users_per_gpu(c["n_layer"], c["n_kv_head"], c["head_dim"], USER_TOKENS,
                             QWEN_PARAMETERS, GPU_BYTES)
    per_user = kv_cache_bytes(c["n_layer"], c["n_kv_head"], c["head_dim"], USER_TOKENS,
                              bytes_per_value=2)
    free = GPU_BYTES - 2 * QWEN_PARAMETERS
    if x == expected:
        return right(f"Each user's cache is 2 x 28 x 4 x 128 x 8192 x 2 = {per_user:,} bytes "
                     f"({per_user / 2**20:.0f} MiB); the weights take 15.2 GB, leaving "
                     f"{free / 1e9:.1f} GB: {expected} users. Shorter contexts or an 8-bit cache "
                     "fit more.")
    if x == expected + 1:
        return wrong("Round down: a user whose cache does not fit whole cannot be served.")
    slips = {
        int(GPU_BYTES // per_user): "The weights live on the same GPU: take their 2 bytes x "
                                    "7.6 billion out of the 80 GB first.",
        users_per_gpu(c["n_layer"], c["n_head"], c["head_dim"], USER_TOKENS, QWEN_PARAMETERS,
                      GPU_BYTES): "Only the 4 key/value heads are cached (grouped-query "
                                  "attention), not all 28 query heads.",
        int(free // (per_user / 2)): "Keys and values are both cached: multiply by 2.",
        int(free // (per_user * 2)): "bfloat16 takes 2 bytes per value, not 4.",
        int((GPU_BYTES - 4 * QWEN_PARAMETERS) // per_user): "The weights are in bfloat16 too: "
                                                            "2 bytes per parameter.",
        int((80 * 2**30 - 2 * QWEN_PARAMETERS) // per_user): "80 GB here means 80e9 bytes, "
                                                             "not 80 GiB.",
    }
    if x in slips:
        return wrong(slips[x])
    return wrong(f"Not {x:g}. Free memory = 80e9 - 2 x 7.6e9 bytes; one user = 2 (key and "
                 "value) x layers x key/value heads x head size x 8192 tokens x 2 bytes; "
                 "divide and round down.")
