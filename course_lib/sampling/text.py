"""From tokens to text while generating: UTF-8-safe streaming pieces and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

from course_lib.model import GPT
from course_lib.sampling.decode import generate, one_prompt, stream_generate
from course_lib.sampling.params import SamplingParams, make_params
from course_lib.tokenization import token_pieces


def stream_text(model: GPT, tokenizer, idx, max_new_tokens: int | None = None, *,
                params: SamplingParams | None = None, use_cache: bool = True,
                **settings) -> Iterator[str]:
    """Yield the text of the new tokens piece by piece, never a broken character.

    A byte-level token can hold part of a character ("🙂" is four bytes, often split over
    tokens); decoding it alone would show U+FFFD. Here the bytes are fed to an incremental
    UTF-8 decoder that holds back an incomplete character until its last byte arrives, so
    the pieces joined are always a prefix of the final text. One sequence only; a stop token
    ends the stream and its own text is not yielded.

    stop (a setting): a string or strings (stop sequences). Generation ends with the token
    whose text completes one of them in the generated text, and that token's text is yielded
    whole, stop string included (transformers' StopStringCriteria: it stops on the same token,
    and keeps the text too; unlike it, text of the prompt does not count towards a match). Cut
    the result at the stop string if it should not show. Other settings: see stream_generate.
    """
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    params = make_params(params, settings)
    prompt = one_prompt(model, idx)
    tokens = (int(t) for t in stream_generate(model, prompt, params=params, use_cache=use_cache))
    pieces = utf8_pieces(tokenizer, tokens, params.stop_ids)
    if not params.stop:
        yield from pieces
        return
    longest = max(len(s) for s in params.stop)
    text = ""
    for piece in pieces:
        # only a match that ends in this piece is new: look back one stop string's length
        window = text[max(0, len(text) - longest + 1):] + piece
        text += piece
        yield piece
        if any(s in window for s in params.stop):
            return


def generate_text(model: GPT, tokenizer, prompt: str, max_new_tokens: int | None = None, *,
                  params: SamplingParams | None = None, use_cache: bool = True,
                  **settings) -> str:
    """The text the model writes after prompt (the prompt itself is not included).

    stop (a setting): a string or strings that end generation, kept in the text (see
    stream_text). Other settings: see stream_generate.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError("prompt is empty: give at least one character to start from")
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    params = make_params(params, settings)
    prompt_ids = tokenizer.encode(prompt)
    if params.stop:
        return "".join(stream_text(model, tokenizer, prompt_ids, params=params,
                                   use_cache=use_cache))
    out = generate(model, prompt_ids, params=params, use_cache=use_cache)
    return tokenizer.decode(out[0, len(prompt_ids) :].tolist())


def utf8_pieces(tokenizer, tokens: Iterable[int], stop_ids: Iterable[int] = ()) -> Iterator[str]:
    """The text of a stream of token ids, as pieces that never split a character.

    Joined, the pieces equal tokenizer.decode(all ids before the first stop id) exactly,
    including U+FFFD for bytes that are not valid UTF-8; an empty piece is never yielded.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stop_ids = set(stop_ids)
    for token in tokens:
        if token in stop_ids:
            break
        piece = decoder.decode(token_pieces(tokenizer, [token])[0])
        if piece:
            yield piece
    piece = decoder.decode(b"", final=True)  # an unfinished character at the end: U+FFFD
    if piece:
        yield piece
