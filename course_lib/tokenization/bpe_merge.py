"""BPE encoding of one chunk: merge the lowest-ranked adjacent pair of parts until none is left."""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable

# Chunks shorter than this many bytes use the simple list-based merge loop, which is quadratic
# but has the smallest constant; longer ones use the heap (O(n log n)). The two break even
# between 16 and 48 bytes on cl100k; most chunks of prose are shorter.
_HEAP_MIN_BYTES = 32
_NO_MERGE = sys.maxsize


def _merge_short(parts: list[bytes], rank_of: Callable[[bytes, bytes], int]) -> list[bytes]:
    """Quadratic merge loop over a list (tiktoken's own for short pieces): fastest when short."""
    pair_ranks = [rank_of(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_MERGE:
            break
        i = pair_ranks.index(best)  # leftmost on ties, as tiktoken and transformers do
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        # Only the two pairs next to the merge changed.
        if i > 0:
            pair_ranks[i - 1] = rank_of(parts[i - 1], parts[i])
        if i < len(pair_ranks):
            pair_ranks[i] = rank_of(parts[i], parts[i + 1])
    return parts


def _merge_long(parts: list[bytes], rank_of: Callable[[bytes, bytes], int]) -> list[bytes]:
    """The same merges in O(n log n): a heap of (rank, position) over a doubly linked list.

    A part is named by the position of its first byte, so heap order (rank, then position) is
    "lowest rank, leftmost first", exactly the list loop's choice. Each heap entry is the one
    int rank * n + position (ints compare much faster than tuples). Entries whose pair has since
    changed are skipped when popped (lazy deletion): `pair_rank[i]` is the rank of the pair that
    starts at i now, and an entry counts only while it matches.
    """
    n = len(parts)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    pair_rank = [rank_of(parts[i], parts[i + 1]) for i in range(n - 1)]
    pair_rank.append(_NO_MERGE)
    heap = [r * n + i for i, r in enumerate(pair_rank) if r != _NO_MERGE]
    heapq.heapify(heap)
    heappop, heappush = heapq.heappop, heapq.heappush
    while heap:
        r, i = divmod(heappop(heap), n)
        if pair_rank[i] != r:
            continue  # stale: the pair at i was merged away or changed
        j = nxt[i]
        parts[i] += parts[j]
        parts[j] = None
        pair_rank[j] = _NO_MERGE
        k = nxt[j]
        nxt[i] = k
        if k < n:
            prv[k] = i
            r = rank_of(parts[i], parts[k])
            pair_rank[i] = r
            if r != _NO_MERGE:
                heappush(heap, r * n + i)
        else:
            pair_rank[i] = _NO_MERGE
        h = prv[i]
        if h >= 0:
            r = rank_of(parts[h], parts[i])
            pair_rank[h] = r
            if r != _NO_MERGE:
                heappush(heap, r * n + h)
    return [p for p in parts if p is not None]


def _merge_parts(parts: list[bytes], rank_of: Callable[[bytes, bytes], int]) -> list[bytes]:
    """The merged parts, by whichever of the two loops is faster for this many parts."""
    if len(parts) < _HEAP_MIN_BYTES:
        return _merge_short(parts, rank_of)
    return _merge_long(parts, rank_of)


def _pair_rank(pair_ranks: dict[tuple[bytes, bytes], int], left: bytes, right: bytes) -> int:
    return pair_ranks.get((left, right), _NO_MERGE)
