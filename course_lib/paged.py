"""A paged KV cache: fixed-size blocks, a free list, reference counts and a prefix cache.

vLLM's PagedAttention idea in a few lines: the cache is one pool of blocks of kv_block_size
positions per layer, and each sequence owns a *block table*, the list of its blocks in order,
so memory is taken a block at a time instead of a whole context per sequence up front.
Full blocks are remembered by a hash of their tokens and of everything before them, so a
later prompt that starts the same way reuses them (a refcount per block) instead of
recomputing them. A block nobody uses any more stays in that prefix cache until its memory is
needed: then the least recently used one is evicted.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from course_lib.model import GPT
from course_lib.positional import rotate_pairs


class BlockPool:
    """The key and value tensors of every layer, and the bookkeeping of which block is whose.

    keys[layer] and values[layer]: (num_blocks, n_kv_head, block_size, head_dim).
    A block is in exactly one of three states: free (in `free`), in use (refcount > 0), or
    cached (refcount 0 but its contents are known by their hash, in `evictable`).
    """

    def __init__(self, model: GPT, num_blocks: int, block_size: int):
        config = model.config
        head_dim = config.n_embd // config.n_head
        shape = (num_blocks, config.kv_heads, block_size, head_dim)
        like = {"dtype": model.dtype, "device": model.device}
        self.keys = [torch.zeros(shape, **like) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, **like) for _ in range(config.n_layer)]
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free: deque[int] = deque(range(num_blocks))
        self.refcount = [0] * num_blocks
        self.hash_of: dict[int, int] = {}  # block -> hash of its contents, for cached blocks
        self.block_of: dict[int, int] = {}  # hash -> block
        self.evictable: OrderedDict[int, None] = OrderedDict()  # refcount 0, oldest first

    @property
    def used(self) -> int:
        return self.num_blocks - len(self.free) - len(self.evictable)

    @property
    def available(self) -> int:
        """Blocks that can be handed out now: the free ones and the evictable cached ones."""
        return len(self.free) + len(self.evictable)

    def allocate(self) -> int:
        if self.free:
            block = self.free.popleft()
        else:  # reuse the least recently used cached block: its contents are forgotten
            block, _ = self.evictable.popitem(last=False)
            del self.block_of[self.hash_of.pop(block)]
        self.refcount[block] = 1
        return block

    def release(self, block: int) -> None:
        self.refcount[block] -= 1
        if self.refcount[block] == 0:
            if block in self.hash_of:
                self.evictable[block] = None  # most recently used goes last
            else:
                self.free.append(block)

    def lookup(self, key: int) -> int | None:
        """The cached block holding the contents hashed to key, or None."""
        return self.block_of.get(key)

    def share(self, block: int) -> None:
        """Take one more reference to a cached block (a prefix-cache hit)."""
        if self.refcount[block] == 0:
            del self.evictable[block]
        self.refcount[block] += 1

    def register(self, block: int, key: int) -> None:
        """Remember that block now holds the full block of tokens hashed to key."""
        if key in self.block_of or block in self.hash_of:
            return  # the same tokens were computed twice in one step: keep the first copy
        self.block_of[key] = block
        self.hash_of[block] = key


def block_key(parent: int | None, tokens: Sequence[int]) -> int:
    """The prefix cache's key of a full block: a hash chain, so it stands for every token before
    it too (two blocks with the same tokens after different prefixes hold different keys)."""
    return hash((parent, tuple(tokens)))


class PagedBatch:
    """Index tensors for one step, built once and shared by every layer.

    The new tokens of all sequences are laid end to end in one flat row of N tokens (a prompt
    contributes all its uncomputed tokens, a decoding sequence its last token), so the linear
    layers run on N rows, no padding. Attention needs each sequence's queries and keys side by
    side: q_index (B, T_max) picks a sequence's queries out of the flat row, rows picks its
    keys and values out of the pool (through its block table) into (B, H_kv, L_max, D), and
    mask (B, 1, T_max, L_max) says which key positions each query may see: its own sequence's
    positions up to its own. Padding queries see position 0 only, so their softmax is defined;
    they are dropped. blocks and offsets say where each new token's key and value go.
    """

    def __init__(self, tokens: list[list[int]], starts: list[int], tables: list[list[int]],
                 pool: BlockPool, device: torch.device):
        bs, H_kv = pool.block_size, pool.keys[0].shape[1]
        ids, pos, q_index, q_pos, last, slots = [], [], [], [], [], []
        t_max = max(len(t) for t in tokens)
        for seq_tokens, start, table in zip(tokens, starts, tables, strict=True):
            n = len(seq_tokens)
            first = len(ids)
            ids += seq_tokens
            positions = range(start, start + n)
            pos += positions
            slots += [(table[p // bs], p % bs) for p in positions]
            q_index.append(list(range(first, first + n)) + [first] * (t_max - n))
            q_pos.append(list(positions) + [-1] * (t_max - n))
            last.append(first + n - 1)
        nb_max = max(len(t) for t in tables)
        as_long = dict(dtype=torch.long, device=device)
        self.ids = torch.tensor(ids, **as_long)
        self.pos = torch.tensor(pos, **as_long)
        self.blocks, self.offsets = torch.tensor(slots, **as_long).T
        table = torch.tensor([t + [0] * (nb_max - len(t)) for t in tables], **as_long)
        # Where key position l of sequence b, head h, lives in the pool seen as rows of
        # head_dim numbers: one index_select then lays out every sequence's keys (B, H_kv, L, D)
        # in one copy, where indexing by block and then reordering would copy twice.
        key_pos = torch.arange(nb_max * bs, device=device)
        block_of = table[:, key_pos // bs]  # (B, L)
        heads = torch.arange(H_kv, device=device)[None, :, None]
        self.rows = ((block_of[:, None, :] * H_kv + heads) * bs + key_pos % bs).reshape(-1)
        self.kv_shape = (len(tables), H_kv, nb_max * bs, pool.keys[0].shape[-1])
        self.q_index = torch.tensor(q_index, **as_long)
        query_pos = torch.tensor(q_pos, **as_long)
        self.valid = query_pos >= 0
        # A padding query (position -1 -> 0) sees key 0 only: a defined softmax, thrown away.
        self.mask = (key_pos <= query_pos.clamp(min=0)[..., None])[:, None]
        self.last = torch.tensor(last, **as_long)


def _attention(attn, x: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
               batch: PagedBatch, rotation: torch.Tensor | None) -> torch.Tensor:
    """One attention layer over the paged batch: x (N, C) -> (N, C), writing the new k, v."""
    N, C = x.shape
    H, H_kv, D = attn.n_head, attn.n_kv_head, attn.head_dim
    qkv = attn.c_attn(x)
    if rotation is not None:  # rotary: each token turned by its own position's angles
        qk, v = qkv.split([C + H_kv * D, H_kv * D], dim=-1)
        qk = rotate_pairs(qk.view(N, H + H_kv, D), rotation[:, None])
        q, k = qk.split([H, H_kv], dim=1)
    else:
        q, k, v = qkv.split([C, H_kv * D, H_kv * D], dim=-1)
        q, k = q.view(N, H, D), k.view(N, H_kv, D)
    v = v.view(N, H_kv, D)
    # Write the new keys and values into their blocks first, so a prompt's queries see them.
    k_pool[batch.blocks, :, batch.offsets] = k
    v_pool[batch.blocks, :, batch.offsets] = v
    keys = k_pool.view(-1, D).index_select(0, batch.rows).view(batch.kv_shape)
    values = v_pool.view(-1, D).index_select(0, batch.rows).view(batch.kv_shape)
    queries = q[batch.q_index].transpose(1, 2)  # (B, H, T_max, D)
    y = F.scaled_dot_product_attention(queries, keys, values, attn_mask=batch.mask,
                                       enable_gqa=H != H_kv)
    y = y.transpose(1, 2)[batch.valid]  # back to the flat row: (N, H, D)
    return attn.c_proj(y.reshape(N, C))


def paged_forward(model: GPT, pool: BlockPool, batch: PagedBatch,
                  rope_table: torch.Tensor | None) -> torch.Tensor:
    """The model's forward pass over one step's tokens: logits (B, V) after each sequence's
    last new token. The same modules and arithmetic as GPT.forward, with the KV cache paged."""
    t = model.transformer
    x = t.wte(batch.ids)
    rotation = None
    if t.wpe is not None:
        x = x + t.wpe(batch.pos)
    else:
        rotation = rope_table[batch.pos]
    for i, block in enumerate(t.h):
        x = x + _attention(block.attn, block.ln_1(x), pool.keys[i], pool.values[i], batch,
                           rotation)
        if block.mlp is not None:
            x = x + block.mlp(block.ln_2(x))
    return model.lm_head(t.ln_f(x[batch.last]))
