"""A serving engine: continuous batching over a paged KV cache with prefix caching.

Requests arrive at any time (add_request) and each step() runs ONE forward pass over every
running request: the prompts of newly admitted requests (prefill) side by side with the last
token of those already decoding, as in vLLM and Orca. A request leaves the batch the step it
finishes, and a waiting one takes its place at the next step, so the batch stays full instead
of waiting for its slowest member (static batching). Keys and values live in a paged pool
(course_lib.paged); full prompt blocks already computed for an earlier request are reused.
Every token is chosen by course_lib.sampling.sample_next, so greedy output equals generate's.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from course_lib.model import GPT, eval_mode
from course_lib.paged import BlockPool, PagedBatch, block_key, paged_forward
from course_lib.positional import rope_rotation
from course_lib.sampling.decode import sample_next, seeded_generator
from course_lib.sampling.params import SamplingParams
from course_lib.validation import check_bool, check_choice, check_int, check_str, check_token_ids

POLICIES = ("continuous", "static")
# The pool is allocated up front. Room for every sequence's full context is little for a small
# model, but for SmolLM2 (8,192 positions, 16 sequences) it would be 6 GB of float32: the
# default stops at 512 MiB, 11,600 of SmolLM2's positions, shared as requests need them.
DEFAULT_KV_CACHE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class TokenEvent:
    """One thing that happened to a request in a step: a new token, its end, or both."""

    request_id: str
    token: int | None  # the new token, or None when a request ends without one (cancelled)
    finish_reason: str | None  # None while running; "stop", "length" or "cancelled"


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine, for a server's metrics page."""

    requests_running: int
    requests_waiting: int
    kv_cache_blocks_used: int
    kv_cache_blocks_total: int
    prefix_cache_hits_total: int  # prompt blocks reused instead of recomputed, since start
    generated_tokens_total: int
    max_batch_size: int


class QueueFull(Exception):
    """add_request was called while max_waiting requests were already waiting."""


@dataclass
class _Request:
    id: str
    tokens: list[int]  # the prompt, then each generated token
    prompt_len: int
    params: SamplingParams
    generator: torch.Generator | None
    max_blocks: int  # blocks it may need by its last token: reserved when it is admitted
    blocks: list[int] = field(default_factory=list)  # its block table
    computed: int = 0  # positions whose keys and values are in its blocks
    keys: list[int] = field(default_factory=list)  # hash-chain key of each full block so far
    registered: int = 0  # blocks already offered to the prefix cache

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len


class Engine:
    """Serve many generation requests at once with one model.

    policy "continuous": requests join and leave the running batch at every step. policy
    "static": waiting requests are admitted only when the running batch is empty (the classic
    static batching baseline); max_batch_size=1 serves one request at a time. num_kv_blocks
    None: enough blocks for max_batch_size sequences of the full context, or
    DEFAULT_KV_CACHE_BYTES of them if that is less (requests then wait for blocks, never fail
    midway). max_waiting: how many requests may wait for a slot before add_request raises
    QueueFull (None: no limit).
    """

    def __init__(self, model: GPT, *, max_batch_size: int = 16, kv_block_size: int = 16,
                 num_kv_blocks: int | None = None, prefix_caching: bool = True,
                 max_waiting: int | None = None, policy: str = "continuous"):
        if not isinstance(model, GPT):
            raise TypeError(f"model must be a course_lib GPT, got {type(model).__name__}")
        self.model = model
        self.max_batch_size = check_int("max_batch_size", max_batch_size, minimum=1)
        self.block_size = check_int("kv_block_size", kv_block_size, minimum=1)
        context = model.config.block_size
        if num_kv_blocks is None:
            config = model.config
            block_bytes = (2 * config.n_layer * config.kv_heads * self.block_size
                           * (config.n_embd // config.n_head)
                           * model.dtype.itemsize)
            num_kv_blocks = min(self.max_batch_size * -(-context // self.block_size),
                                max(1, DEFAULT_KV_CACHE_BYTES // block_bytes))
        num_kv_blocks = check_int("num_kv_blocks", num_kv_blocks, minimum=1)
        self.prefix_caching = check_bool("prefix_caching", prefix_caching)
        self.max_waiting = None if max_waiting is None else check_int(
            "max_waiting", max_waiting, minimum=0)
        self.policy = check_choice("policy", policy, POLICIES)
        self.pool = BlockPool(model, num_kv_blocks, self.block_size)
        self.device = model.device
        self.rope_table = None
        if model.config.position == "rope":  # row p: the rotation of position p, as generate's
            self.rope_table = rope_rotation(0, context, model.config.n_embd // model.config.n_head,
                                            model.config.rope_base, self.device)
        self.waiting: deque[_Request] = deque()
        self.running: list[_Request] = []
        self.requests: dict[str, _Request] = {}  # every unfinished request, by id
        self.events: list[TokenEvent] = []  # ends decided between steps (cancelled), reported next
        self.reserved = 0  # blocks promised to running requests and not yet allocated
        self.prefix_hits = 0
        self.generated_total = 0
        self._ids = (f"req-{i}" for i in itertools.count())

    # ----- requests in and out ------------------------------------------------------------

    def add_request(self, prompt_ids: Sequence[int], params: SamplingParams | None = None, *,
                    request_id: str | None = None) -> str:
        """Queue a request; returns its id. Everything is checked before anything changes."""
        prompt = check_token_ids("prompt_ids", prompt_ids, self.model.config.vocab_size)
        if prompt.shape[0] != 1:
            raise ValueError(f"prompt_ids must be one sequence of token ids, got a batch of "
                             f"{prompt.shape[0]}")
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams or None, got "
                            f"{type(params).__name__}")
        params.stop_tensor(self.model.config.vocab_size, "cpu")  # stop ids in the vocabulary
        if request_id is not None and check_str("request_id", request_id) in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use by an unfinished "
                             "request")
        n, context = prompt.shape[1], self.model.config.block_size
        if n + params.max_new_tokens > context:
            raise ValueError(f"the prompt ({n} tokens) + max_new_tokens "
                             f"({params.max_new_tokens}) = {n + params.max_new_tokens} reaches "
                             f"beyond the context of {context} tokens")
        max_blocks = -(-(n + params.max_new_tokens - 1) // self.block_size)
        if max_blocks > self.pool.num_blocks:
            raise ValueError(f"the request needs {max_blocks} KV blocks but the cache has only "
                             f"{self.pool.num_blocks} (num_kv_blocks)")
        if self.max_waiting is not None and len(self.waiting) >= self.max_waiting:
            raise QueueFull(f"{len(self.waiting)} requests are already waiting "
                            f"(max_waiting={self.max_waiting})")
        if request_id is None:  # only now: a refused request does not use up an id
            request_id = next(i for i in self._ids if i not in self.requests)
        request = _Request(request_id, prompt[0].tolist(), n, params,
                           seeded_generator(params.seed, self.device), max_blocks)
        self.waiting.append(request)
        self.requests[request_id] = request
        return request_id

    def cancel(self, request_id: str) -> bool:
        """Stop a request now, freeing its slot and blocks; the next step() reports
        TokenEvent(id, None, "cancelled"). False if no unfinished request has that id."""
        request = self.requests.pop(request_id, None) if isinstance(request_id, str) else None
        if request is None:
            return False
        if request in self.running:
            self.running.remove(request)
            self._free(request)
        else:
            self.waiting.remove(request)
        self.events.append(TokenEvent(request_id, None, "cancelled"))
        return True

    def has_unfinished(self) -> bool:
        """Whether a step() still has something to do or to report."""
        return bool(self.running or self.waiting or self.events)

    def stats(self) -> EngineStats:
        return EngineStats(
            requests_running=len(self.running), requests_waiting=len(self.waiting),
            kv_cache_blocks_used=self.pool.used, kv_cache_blocks_total=self.pool.num_blocks,
            prefix_cache_hits_total=self.prefix_hits,
            generated_tokens_total=self.generated_total, max_batch_size=self.max_batch_size)

    def block_table(self, request_id: str) -> list[int]:
        """The physical blocks holding a request's keys and values, in position order."""
        request = self.requests.get(request_id)
        if request is None:
            raise KeyError(f"no unfinished request with id {request_id!r}")
        return list(request.blocks)

    def block_snapshot(self) -> list[tuple[str, ...] | str]:
        """Who holds each physical block now, by block number: the ids of the requests whose
        block tables hold it (several when a cached prefix is shared), or "cached" (nobody's,
        its contents kept for the prefix cache until needed), or "free"."""
        owners: list[tuple[str, ...] | str] = [
            "cached" if b in self.pool.evictable else "free" for b in range(self.pool.num_blocks)]
        for request in self.running:
            for block in request.blocks:
                held = owners[block]
                owners[block] = (held if isinstance(held, tuple) else ()) + (request.id,)
        return owners

    def run(self, prompts: Sequence[Sequence[int]],
            params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[list[int]]:
        """Add every prompt, step until all are done; each one's generated ids, in order.

        Steps until the engine is idle: meant for an engine with nothing else to do (events of
        requests added elsewhere are not returned)."""
        per_row = params if isinstance(params, Sequence) else [params] * len(prompts)
        if len(per_row) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts need {len(prompts)} params, "
                             f"got {len(per_row)}")
        ids = [self.add_request(p, q) for p, q in zip(prompts, per_row, strict=True)]
        out: dict[str, list[int]] = {i: [] for i in ids}
        while self.has_unfinished():
            for event in self.step():
                if event.request_id in out and event.token is not None:
                    out[event.request_id].append(event.token)
        return [out[i] for i in ids]

    # ----- one step -------------------------------------------------------------------------

    def step(self) -> list[TokenEvent]:
        """Admit what fits, run one forward pass over the running batch, choose one token per
        running request, and retire those that finished."""
        events, self.events = self.events, []
        self._admit(events)
        if not self.running:
            return events
        batch = self.running
        for request in batch:  # a block for every position this step writes
            while len(request.blocks) * self.block_size < len(request.tokens):
                request.blocks.append(self.pool.allocate())
                self.reserved -= 1
        paged = PagedBatch([r.tokens[r.computed:] for r in batch], [r.computed for r in batch],
                           [r.blocks for r in batch], self.pool, self.device)
        # Toggling train/eval walks every module: only when the model is not in eval already.
        with eval_mode(self.model) if self.model.training else torch.inference_mode():
            logits = paged_forward(self.model, self.pool, paged, self.rope_table)
            contexts = [torch.tensor(r.tokens, device=self.device) if r.params.penalized
                        else None for r in batch]
            chosen = sample_next(logits, [r.params for r in batch], contexts,
                                 [r.generator for r in batch]).tolist()
        finished = []
        for request, token in zip(batch, chosen, strict=True):
            request.computed = len(request.tokens)
            self._remember_blocks(request)
            request.tokens.append(token)
            self.generated_total += 1
            reason = None
            if token in request.params.stop_ids:
                reason = "stop"
            elif request.generated >= request.params.max_new_tokens:
                reason = "length"
            events.append(TokenEvent(request.id, token, reason))
            if reason is not None:
                finished.append(request)
        for request in finished:  # leave at once: the next step's admissions take the slots
            self.running.remove(request)
            del self.requests[request.id]
            self._free(request)
        return events

    def _admit(self, events: list[TokenEvent]) -> None:
        """Move waiting requests into the batch, first come first served, while a slot and
        their blocks are free (static policy: only into an empty batch)."""
        if self.policy == "static" and self.running:
            return
        while self.waiting and len(self.running) < self.max_batch_size:
            request = self.waiting[0]
            if request.params.max_new_tokens == 0:  # nothing to generate: done at once
                self.waiting.popleft()
                del self.requests[request.id]
                events.append(TokenEvent(request.id, None, "length"))
                continue
            hits = self._cached_prefix(request)
            evictable_hits = sum(self.pool.refcount[b] == 0 for b in hits)
            available = self.pool.available - evictable_hits - self.reserved
            if available < request.max_blocks - len(hits):
                return  # wait until running requests give blocks back
            self.waiting.popleft()
            for block in hits:
                self.pool.share(block)
            request.blocks = hits
            request.computed = len(hits) * self.block_size
            request.registered = len(hits)
            self.prefix_hits += len(hits)
            self.reserved += request.max_blocks - len(hits)
            self.running.append(request)

    def _cached_prefix(self, request: _Request) -> list[int]:
        """The cached blocks that hold the start of request's prompt (its last prompt token is
        always computed, so that its logits exist)."""
        request.keys = []
        parent = None
        for i in range((request.prompt_len - 1) // self.block_size if self.prefix_caching else 0):
            parent = block_key(parent, request.tokens[i * self.block_size:
                                                      (i + 1) * self.block_size])
            request.keys.append(parent)
        hits = []
        for key in request.keys:
            block = self.pool.lookup(key)
            if block is None:
                break
            hits.append(block)
        return hits

    def _remember_blocks(self, request: _Request) -> None:
        """Offer every newly completed full block to the prefix cache: answer blocks too, since
        a chat's next prompt starts with this one's prompt and answer."""
        if not self.prefix_caching:
            return
        full = request.computed // self.block_size
        while request.registered < full:
            i = request.registered
            if i == len(request.keys):
                parent = request.keys[-1] if request.keys else None
                request.keys.append(block_key(parent, request.tokens[i * self.block_size:
                                                                     (i + 1) * self.block_size]))
            self.pool.register(request.blocks[i], request.keys[i])
            request.registered += 1

    def _free(self, request: _Request) -> None:
        for block in request.blocks:
            self.pool.release(block)
        self.reserved -= request.max_blocks - len(request.blocks)
        request.blocks = []


def record_schedule(engine: Engine, schedule: dict[int, list[tuple]]) -> list[dict]:
    """Step `engine` through a schedule and snapshot it after each step, for a picture.

    schedule: step number -> actions done just before that step: ("add", prompt_ids, params,
    request_id) or ("cancel", request_id). Steps until the schedule is done and the engine idle.
    Each frame: step, blocks (block_snapshot()), tables (running id -> block table), waiting
    ids, and events (what the step reported, as "id: token" / "id: finish_reason")."""
    frames: list[dict] = []
    step = 0
    last = max(schedule, default=0)
    while step <= last or engine.has_unfinished():
        for action in schedule.get(step, []):
            if action[0] == "add":
                engine.add_request(action[1], action[2], request_id=action[3])
            elif action[0] == "cancel":
                engine.cancel(action[1])
            else:
                raise ValueError(f"unknown action {action[0]!r}: use 'add' or 'cancel'")
        events = engine.step()
        frames.append({
            "step": step, "blocks": engine.block_snapshot(),
            "tables": {r.id: list(r.blocks) for r in engine.running},
            "waiting": [r.id for r in engine.waiting],
            "events": [f"{e.request_id}: {e.finish_reason}" if e.finish_reason else
                       f"{e.request_id}: token {e.token}" for e in events],
        })
        step += 1
    return frames

