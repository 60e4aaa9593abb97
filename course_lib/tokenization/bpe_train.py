"""BPE training: learn merges from text, a naive reference trainer and the fast incremental one."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from itertools import pairwise

import regex

from course_lib.tokenization.patterns import GPT4_SPLIT_PATTERN
from course_lib.tokenization.vocab import MAX_VOCAB_SIZE
from course_lib.validation import check_int

# Separates documents in a training corpus; a trained tokenizer gives it the last id.
ENDOFTEXT = "<|endoftext|>"


def _check_vocab_size(vocab_size: int) -> int:
    vocab_size = check_int("vocab_size", vocab_size)
    if vocab_size < 257:
        raise ValueError(
            f"vocab_size must be at least 257 (256 bytes + {ENDOFTEXT}), got {vocab_size}"
        )
    if vocab_size > MAX_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at most {MAX_VOCAB_SIZE}, got {vocab_size}")
    return vocab_size


def _train_chunks(text: str) -> Counter[str]:
    """Pre-split training text into regex chunks, counting how often each distinct chunk occurs."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError("text must not be empty")
    compiled = regex.compile(GPT4_SPLIT_PATTERN)
    counts: Counter[str] = Counter()
    # Document separators in a corpus are special tokens, not text to learn merges from.
    for part in text.split(ENDOFTEXT):
        counts.update(compiled.findall(part))
    return counts


def _merge_pair(ids: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of (a, b), scanning left to right, by new_id."""
    out = []
    i = 0
    n = len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def naive_train_bpe(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Reference BPE trainer: recount every pair from scratch before each merge.

    Same result as `BPETokenizer.train` (same pre-split, same tie-break: highest count, then the
    smallest pair), only much slower; it is here to be read and to check the fast one against.
    Returns the merges in order; merges[i] creates token id 256 + i.
    """
    vocab_size = _check_vocab_size(vocab_size)
    chunk_counts = _train_chunks(text)
    # Identical chunks merge identically, so keep each distinct chunk once with its count.
    chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    weights = list(chunk_counts.values())

    merges: list[tuple[int, int]] = []
    for new_id in range(256, vocab_size - 1):  # the last id is reserved for <|endoftext|>
        stats: Counter[tuple[int, int]] = Counter()
        for ids, weight in zip(chunks, weights, strict=True):
            for pair in pairwise(ids):
                stats[pair] += weight
        if not stats:
            break
        best = min(stats, key=lambda pair: (-stats[pair], pair))
        if stats[best] < 2:  # merging a pair seen once compresses nothing that repeats
            break
        merges.append(best)
        chunks = [_merge_pair(ids, best[0], best[1], new_id) for ids in chunks]
    return merges


def _fast_train_merges(
    chunk_counts: Counter[str], num_merges: int, verbose: bool = False
) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Incremental BPE: same merges as `naive_train_bpe`, touching only chunks that change.

    Returns the merges and the bytes of every token (index = id).
    """
    chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    weights = list(chunk_counts.values())

    # pair -> total count over all chunks, and pair -> indices of chunks that (may) contain it.
    # `where` is allowed to go stale (a chunk that no longer has the pair); merging such a chunk
    # is simply a no-op.
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for idx, (ids, weight) in enumerate(zip(chunks, weights, strict=True)):
        for pair in pairwise(ids):
            pair_counts[pair] += weight
            where[pair].add(idx)

    # Max-heap via negated counts; ties resolve to the smallest pair because tuples compare
    # element-wise. Entries go stale when a count drops: we check on pop (lazy deletion). A
    # count never rises for an existing pair, only new pairs (containing the new id) appear,
    # so every live pair always has an entry whose count is >= its true count.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    vocab = [bytes([i]) for i in range(256)]
    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg_count:
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        if count < 2:
            break

        new_id = 256 + len(merges)
        a, b = pair
        merges.append(pair)
        vocab.append(vocab[a] + vocab[b])
        if verbose:
            print(
                f"merge {len(merges)}/{num_merges}: {pair} -> {new_id} "
                f"{vocab[new_id]!r} ({count} occurrences)"
            )

        new_pairs: set[tuple[int, int]] = set()
        for idx in where.pop(pair):
            old = chunks[idx]
            new = _merge_pair(old, a, b, new_id)
            if len(new) == len(old):
                continue
            weight = weights[idx]
            # Recount just this chunk: take its old pairs out, put its new pairs in.
            for p in pairwise(old):
                pair_counts[p] -= weight
                if not pair_counts[p]:
                    del pair_counts[p]
            for p in pairwise(new):
                pair_counts[p] += weight
                where[p].add(idx)
                if new_id in p:
                    new_pairs.add(p)
            chunks[idx] = new
        for p in new_pairs:
            heapq.heappush(heap, (-pair_counts[p], p))
    return merges, vocab
