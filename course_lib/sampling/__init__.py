"""Turning logits into text: the sampling settings, the filters, and every way of generating.

Where each idea lives:

- params.py       SamplingParams: every setting, checked once when built
- processors.py   penalties, temperature, top-k, top-p, min-p (transformers' processors)
- decode.py       sample_next, the one place a token is chosen; the decoding loop
                  (generate, stream_generate, generate_batch), and trace_decoding,
                  that loop written out step by step with each step's candidates
- text.py         streaming UTF-8-safe text, stop strings, generate_text
- beam.py         beam search
- speculative.py  speculative decoding (a draft model or prompt lookup)
"""

from course_lib.sampling.beam import beam_search
from course_lib.sampling.decode import (
    DecodingStep,
    decode_steps,
    generate,
    generate_batch,
    next_token_distribution,
    next_token_logits,
    next_token_probs,
    repeated_ngram_fraction,
    sample_next,
    seeded_generator,
    stream_generate,
    trace_decoding,
)
from course_lib.sampling.params import MAX_NEW_TOKENS, SamplingParams, make_params
from course_lib.sampling.processors import (
    apply_penalties,
    apply_temperature,
    describe_filtering,
    entropy_bits,
    filter_logits,
    min_p_filter,
    presence_frequency_penalty,
    process_logits,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from course_lib.sampling.speculative import (
    PromptLookupDraft,
    SpeculativeRound,
    accept_or_resample,
    speculative_generate,
    speculative_rounds,
)
from course_lib.sampling.text import generate_text, stream_text, utf8_pieces

__all__ = [
    "DecodingStep", "MAX_NEW_TOKENS", "PromptLookupDraft", "SamplingParams", "SpeculativeRound",
    "accept_or_resample", "apply_penalties", "apply_temperature", "beam_search",
    "decode_steps", "describe_filtering", "entropy_bits", "filter_logits", "generate",
    "generate_batch", "generate_text", "make_params", "min_p_filter", "next_token_distribution",
    "next_token_logits", "next_token_probs", "presence_frequency_penalty", "process_logits",
    "repeated_ngram_fraction", "repetition_penalty", "sample_next", "seeded_generator",
    "speculative_generate", "speculative_rounds", "stream_generate", "stream_text",
    "top_k_filter", "top_p_filter", "trace_decoding", "utf8_pieces",
]
