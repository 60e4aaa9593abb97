"""The regexes that pre-split text into chunks before BPE merges bytes within each chunk."""

from __future__ import annotations

# Exactly tiktoken's cl100k_base `pat_str` (the test suite checks this), so that our pre-split
# agrees with tiktoken's and a tokenizer built from cl100k's ranks reproduces its ids.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
# GPT-2's pre-split as Hugging Face's ByteLevel pre-tokenizer spells it; transformers uses it for
# byte-level GGUF vocabularies such as SmolLM2's. tiktoken's r50k_base spells the same split
# with possessive quantifiers (_R50K_SPLIT_PATTERN).
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_R50K_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
# SmolLM2's own pre-split (its tokenizer.json: every digit apart, then GPT-2's ByteLevel split;
# llama.cpp's "smollm") as one regex: digits alone, nothing else spans one, and a run of
# whitespace may end right before a digit as it would at the end of a piece.
SMOLLM_SPLIT_PATTERN = (
    r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
)
# The only patterns `BPETokenizer.load` compiles: a pattern read from a file could otherwise be
# one that backtracks catastrophically and hangs encode() on a short string.
KNOWN_SPLIT_PATTERNS = frozenset(
    {GPT4_SPLIT_PATTERN, GPT2_SPLIT_PATTERN, _R50K_SPLIT_PATTERN, SMOLLM_SPLIT_PATTERN}
)
