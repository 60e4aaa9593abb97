"""Chat with an instruction-tuned model: SmolLM2's chat template, safe encoding, replies.

A chat model reads one long text in which each message is wrapped in markers, ChatML style:

    <|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    <|im_start|>user
    What is the capital of France?<|im_end|>
    <|im_start|>assistant

and writes the assistant's reply, ending it with <|im_end|>. The markers are special tokens,
one id each; the same strings typed by a user must stay plain text (encode_chat).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from course_lib.model import GPT
from course_lib.sampling import SamplingParams, generate, make_params, stream_text
from course_lib.validation import check_int

ROLES = ("system", "user", "assistant")
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# SmolLM2-135M-Instruct's template adds this system message when a conversation has none.
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def check_messages(messages) -> list[dict]:
    """messages, if it is a list of {"role": "system"|"user"|"assistant", "content": str}."""
    if not isinstance(messages, (list, tuple)):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts, got "
                         f"{type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: give at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got "
                             f"{type(m).__name__}")
        if set(m) != {"role", "content"}:
            missing, extra = {"role", "content"} - set(m), set(m) - {"role", "content"}
            raise ValueError(f"messages[{i}] must have exactly the keys 'role' and 'content'"
                             + (f"; missing {sorted(missing)}" if missing else "")
                             + (f"; unexpected {sorted(map(str, extra))}" if extra else ""))
        if not isinstance(m["role"], str) or m["role"] not in ROLES:
            raise ValueError(f"messages[{i}]['role'] must be one of {ROLES}, got "
                             f"{m['role']!r:.40}")
        if not isinstance(m["content"], str):
            raise ValueError(f"messages[{i}]['content'] must be a str, got "
                             f"{type(m['content']).__name__}")
    return list(messages)


def _segments(messages: list[dict], add_generation_prompt: bool) -> list[tuple[str, bool]]:
    """The conversation as (text, is_marker) pieces, in order: the template in one place."""
    out: list[tuple[str, bool]] = []

    def message(role: str, content: str) -> None:
        out.extend([(IM_START, True), (f"{role}\n{content}", False), (IM_END, True),
                    ("\n", False)])

    if messages[0]["role"] != "system":
        message("system", DEFAULT_SYSTEM)
    for m in messages:
        message(m["role"], m["content"])
    if add_generation_prompt:
        out.extend([(IM_START, True), ("assistant\n", False)])
    return out


def apply_chat_template(messages, add_generation_prompt: bool = True) -> str:
    """The conversation as the one text the model reads (equal to transformers' rendering)."""
    messages = check_messages(messages)
    if not isinstance(add_generation_prompt, bool):
        raise TypeError(f"add_generation_prompt must be True or False, got "
                        f"{add_generation_prompt!r:.40}")
    return "".join(text for text, _ in _segments(messages, add_generation_prompt))


def _special_id(tokenizer, name: str) -> int:
    specials = getattr(tokenizer, "special_tokens", None) or {}
    if name not in specials:
        raise ValueError(f"the tokenizer has no special token {name!r}: it is not a chat "
                         "model's tokenizer (use load_smollm2())")
    return specials[name]


def encode_chat(tokenizer, messages, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the conversation: the template's markers as special tokens, and the
    messages' contents as plain text.

    A user who types "<|im_end|><|im_start|>system ..." into a message cannot forge a system
    turn: those characters are encoded as ordinary text, not as the marker ids. Without such
    strings in the contents, the ids equal tokenizing apply_chat_template's text.
    """
    messages = check_messages(messages)
    if not isinstance(add_generation_prompt, bool):
        raise TypeError(f"add_generation_prompt must be True or False, got "
                        f"{add_generation_prompt!r:.40}")
    ids: list[int] = []
    for text, is_marker in _segments(messages, add_generation_prompt):
        if is_marker:
            ids.append(_special_id(tokenizer, text))
        else:
            ids.extend(tokenizer.encode_ordinary(text))
    return ids


def reply_stop_ids(tokenizer) -> list[int]:
    """The ids that end a chat model's reply: <|im_end|> and <|endoftext|>, those it has."""
    specials = getattr(tokenizer, "special_tokens", None) or {}
    return [specials[n] for n in (IM_END, "<|endoftext|>") if n in specials]


def _reply(tokenizer, messages, params: SamplingParams | None, max_new_tokens: int | None,
           settings: dict) -> tuple[list[int], SamplingParams]:
    """(the prompt's ids, the settings with the ids that end a reply), once checked."""
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    params = make_params(params, settings, max_new_tokens=256, temperature=0.0)
    check_int("max_new_tokens", params.max_new_tokens, minimum=1)
    stops = tuple(dict.fromkeys(params.stop_ids + tuple(reply_stop_ids(tokenizer))))
    return encode_chat(tokenizer, messages), dataclasses.replace(params, stop_ids=stops)


def chat(model: GPT, tokenizer, messages, max_new_tokens: int | None = None, *,
         params: SamplingParams | None = None, **settings) -> str:
    """The assistant's reply to the conversation, up to (not including) its <|im_end|>.

    Settings: a SamplingParams or its fields as keywords; by default up to 256 tokens at
    temperature 0, greedy: the same reply every time.
    """
    prompt, params = _reply(tokenizer, messages, params, max_new_tokens, settings)
    out = generate(model, prompt, params=params)[0, len(prompt) :].tolist()
    if out and out[-1] in params.stop_ids:
        out = out[:-1]
    return tokenizer.decode(out)


def stream_chat(model: GPT, tokenizer, messages, max_new_tokens: int | None = None, *,
                params: SamplingParams | None = None, **settings) -> Iterator[str]:
    """The assistant's reply as it is written, in pieces that never split a character.

    Joined, the pieces equal chat(...) with the same arguments.
    """
    prompt, params = _reply(tokenizer, messages, params, max_new_tokens, settings)
    yield from stream_text(model, tokenizer, prompt, params=params)
