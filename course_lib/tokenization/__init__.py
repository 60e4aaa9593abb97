"""Character and byte-level BPE tokenizers: fast GPT-4-style training, tiktoken-exact encoding.

Where each idea lives:

- `char`: CharTokenizer, one token per character.
- `patterns`: the regexes that pre-split text into chunks (GPT-4's, GPT-2's, SmolLM2's).
- `bpe_train`: learning merges from text, the naive reference and the fast incremental trainer.
- `bpe_merge`: merging one chunk's bytes into tokens, lowest rank first (list loop and heap).
- `bpe`: BPETokenizer: encode and decode; built by training, from tiktoken or from a GGUF file.
- `file_format`: the JSON file that BPETokenizer.save writes and BPETokenizer.load reads.
- `offline`: tiktoken's encodings without network (get_encoding, enable_offline_tiktoken).
- `display`: the bytes of each token, and a token's text with its whitespace made visible.
- `vocab`: the checks that make ranks, special tokens and merges a usable vocabulary.
- `ids`: token ids from a caller, checked and turned into plain ints.

A GGUF file's vocabulary is read beside the GGUF reader, in `course_lib.gguf_vocab`.
"""

from course_lib.tokenization.bpe import BPETokenizer
from course_lib.tokenization.bpe_train import ENDOFTEXT, naive_train_bpe
from course_lib.tokenization.char import CharTokenizer
from course_lib.tokenization.display import token_pieces, visible_piece
from course_lib.tokenization.offline import enable_offline_tiktoken, get_encoding
from course_lib.tokenization.patterns import (
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    KNOWN_SPLIT_PATTERNS,
    SMOLLM_SPLIT_PATTERN,
)
from course_lib.tokenization.vocab import MAX_VOCAB_SIZE

__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "KNOWN_SPLIT_PATTERNS",
    "MAX_VOCAB_SIZE",
    "SMOLLM_SPLIT_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "enable_offline_tiktoken",
    "get_encoding",
    "naive_train_bpe",
    "token_pieces",
    "visible_piece",
]
