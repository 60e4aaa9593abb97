"""From text predictor to assistant: instructions from the plays, SFT with a masked loss, DPO."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course_lib.data import (
    DOC_MODULES_HELDOUT,
    DOC_MODULES_TRAIN,
    VAL_PLAYS,
    load_play,
    play_names,
    python_docs_text,
)
from course_lib.model import GPT, eval_mode
from course_lib.sampling import SamplingParams, make_params, stream_text
from course_lib.train import TrainConfig, lr_at, make_optimizer, progress_bar, seeded
from course_lib.validation import (
    check_float,
    check_int,
    check_list,
    check_model,
    check_seed,
    check_str,
    check_tensor,
)

# A plain-text chat format for the shipped model. Its tokenizer has one special token,
# <|endoftext|>, and no role tokens; new role tokens would need new, untrained embedding rows.
# Headers written with tokens the model already has cost nothing to add, and <|endoftext|>
# ends every answer, so generation knows when to stop. The price: a user can type a header.
QUESTION = "### Question:\n"
ANSWER = "\n### Answer:\n"
SYSTEM = "### System:\n"
END_OF_TEXT = "<|endoftext|>"
KINDS = ("speaker", "source", "continue")
SOURCE_ANSWERS = ("play", "docs")
_MIN_CHARS, _MAX_CHARS = 20, 60  # lines long enough to say something, short enough to fit


@dataclass(frozen=True)
class Instruction:
    """One question with its right answer, the candidates it is scored against, and its source."""

    kind: str
    question: str
    answer: str
    choices: tuple[str, ...]
    source: str


def speeches(play: str) -> list[tuple[str, list[str]]]:
    """(speaker, lines) for every speech of one play, in order."""
    out = []
    for block in load_play(play).strip().split("\n\n"):
        head, _, body = block.partition(":\n")
        lines = [line for line in body.split("\n") if line]
        if head and lines:
            out.append((head, lines))
    return out


def _fits(line: str) -> bool:
    return _MIN_CHARS <= len(line) <= _MAX_CHARS


def _play_questions(play: str, n: int, rng: random.Random) -> list[Instruction]:
    talk = speeches(play)
    counts: dict[str, int] = {}
    for who, _ in talk:
        counts[who] = counts.get(who, 0) + 1
    # Only speakers with many speeches, so the wrong candidate is a real character of the play.
    regulars = sorted(w for w, c in counts.items() if c >= 10)
    out: list[Instruction] = []
    candidates = [(who, lines) for who, lines in talk if who in regulars and _fits(lines[0])]
    for who, lines in rng.sample(candidates, min(n, len(candidates))):
        other = rng.choice([w for w in regulars if w != who])
        pair = rng.sample([who, other], 2)
        out.append(Instruction("speaker", f"Who says this, {pair[0]} or {pair[1]}?\n"
                               f"{lines[0]}", who, tuple(pair), play))
    seconds = [lines[1] for _, lines in talk if len(lines) > 1 and _fits(lines[1])]
    pairs = [(who, lines) for who, lines in talk
             if len(lines) > 1 and _fits(lines[0]) and _fits(lines[1])]
    for who, lines in rng.sample(pairs, min(n, len(pairs))):
        wrong = rng.choice([s for s in seconds if s != lines[1]])
        out.append(Instruction("continue", f"Continue as {who}:\n{lines[0]}", lines[1],
                               tuple(rng.sample([lines[1], wrong], 2)), play))
    return out


def _source_questions(play_lines: list[str], doc_lines: list[str], n: int,
                      rng: random.Random, source: str) -> list[Instruction]:
    out = []
    for i in range(n):
        answer = SOURCE_ANSWERS[i % 2]
        line = rng.choice(play_lines if answer == "play" else doc_lines)
        out.append(Instruction("source", f"A play or Python's docs?\n"
                               f"{line}", answer, SOURCE_ANSWERS, source))
    return out


def make_instructions(
    plays: Sequence[str], doc_modules: Sequence[str], n_per_play: int, seed: int = 0
) -> list[Instruction]:
    """Questions built from the given plays and docstring modules, shuffled.

    Per play: n_per_play "Who speaks this line, A or B?" (two regular speakers of the play),
    n_per_play "Continue as SPEAKER:" (the next line of the speech, against a line from another
    speech), and 2 * n_per_play "Is this line from a play or from Python's docs?" in all,
    half of each answer.
    """
    n_per_play = check_int("n_per_play", n_per_play, minimum=1)
    seed = check_seed("seed", seed)
    if not plays:
        raise ValueError("plays is empty: give at least one play name (see play_names())")
    rng = random.Random(seed)
    out: list[Instruction] = []
    play_lines: list[str] = []
    for play in plays:
        out += _play_questions(play, n_per_play, rng)
        play_lines += [ln for _, lines in speeches(play) for ln in lines if _fits(ln)]
    doc_lines = [ln for ln in python_docs_text(doc_modules).splitlines() if _fits(ln)]
    out += _source_questions(play_lines, doc_lines, 2 * n_per_play * len(plays), rng,
                             "+".join(plays) if len(plays) < 4 else "plays")
    rng.shuffle(out)
    return out


def instruction_split(n_per_play: int = 12, n_heldout_per_play: int = 4, seed: int = 0
                      ) -> tuple[list[Instruction], list[Instruction]]:
    """(train, held_out): training questions from the training plays and docstring modules;
    held-out questions only from the held-out plays (data.VAL_PLAYS) and modules."""
    train_plays = [p for p in play_names() if p not in VAL_PLAYS]
    train = make_instructions(train_plays, DOC_MODULES_TRAIN, n_per_play, seed)
    held_out = make_instructions(VAL_PLAYS, DOC_MODULES_HELDOUT, n_heldout_per_play, seed + 1)
    return train, held_out


# ----- tokens: the plain chat format, masked targets, batches ---------------------------------


def end_id(tokenizer) -> int:
    """The id of <|endoftext|>, which ends every answer (a TypeError for a tokenizer that cannot
    write the chat format)."""
    if not callable(getattr(tokenizer, "encode_ordinary", None)):
        raise TypeError(f"tokenizer must be a BPETokenizer with an {END_OF_TEXT} token (the "
                        f"shipped one: load_pretrained()[1]), got {type(tokenizer).__name__}: "
                        "the chat format needs encode_ordinary and that special token")
    special = getattr(tokenizer, "special_tokens", {})
    if END_OF_TEXT not in special:
        raise ValueError(f"the tokenizer has no {END_OF_TEXT} special token to end answers with")
    return special[END_OF_TEXT]


def prompt_text(question: str) -> str:
    """The question in the plain chat format, up to where the answer starts."""
    return QUESTION + check_str("question", question) + ANSWER


def example_ids(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids ending with <|endoftext|>).

    Typed text never becomes a special token (encode_ordinary), and prompt and answer are
    encoded apart, as at generation time, when the answer's tokens come after the prompt's.
    """
    end = end_id(tokenizer)
    prompt = tokenizer.encode_ordinary(prompt_text(question))
    return prompt, tokenizer.encode_ordinary(check_str("answer", answer)) + [end]


def masked_targets(prompt_ids: Sequence[int], answer_ids: Sequence[int],
                   mask_prompt: bool = True) -> tuple[list[int], list[int]]:
    """(inputs, targets) for one example: targets are inputs shifted by one, with -1 (ignored by
    the loss) wherever the next token is still part of the prompt."""
    if not prompt_ids or not answer_ids:
        raise ValueError("prompt_ids and answer_ids must each hold at least one token")
    ids = list(prompt_ids) + list(answer_ids)
    targets = ids[1:]
    if mask_prompt:
        targets[: len(prompt_ids) - 1] = [-1] * (len(prompt_ids) - 1)
    return ids[:-1], targets


def sft_batch(tokenizer, examples: Sequence[Instruction], mask_prompt: bool = True,
              block_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (batch, time) for examples, right-padded (pad targets are -1).

    An example longer than block_size keeps its last block_size tokens, so its answer stays.
    """
    examples = check_examples(examples)
    if block_size is not None:
        block_size = check_int("block_size", block_size, minimum=1)
    rows = [masked_targets(*example_ids(tokenizer, e.question, e.answer), mask_prompt)
            for e in examples]
    if block_size is not None:
        rows = [(x[-block_size:], y[-block_size:]) for x, y in rows]
    return pad_rows(rows, end_id(tokenizer))


def pad_rows(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) rows of unequal lengths as two (batch, time) tensors, right-padded:
    inputs with pad, targets with -1 (ignored by the loss)."""
    width = max(len(x) for x, _ in rows)
    x = torch.full((len(rows), width), pad, dtype=torch.long)
    y = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, (xi, yi) in enumerate(rows):
        x[i, : len(xi)] = torch.tensor(xi)
        y[i, : len(yi)] = torch.tensor(yi)
    return x, y


def target_logprobs(model: GPT, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities, mask), each (batch, time): the log-probability of every target given
    what precedes it, and True where the target is not -1. Runs with gradients if the caller has
    them on (DPO and GRPO train through it)."""
    logits, _ = model(x.to(model.device))
    logp = torch.log_softmax(logits.float(), dim=-1)
    y = y.to(logp.device)
    return logp.gather(-1, y.clamp(min=0)[..., None])[..., 0], y != -1


def sequence_logprobs(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's targets that are not -1, shape (batch,)."""
    picked, mask = target_logprobs(model, x, y)
    return (picked * mask).sum(dim=-1)


# ----- supervised fine-tuning -----------------------------------------------------------------


def sft_train(
    model: GPT,
    tokenizer,
    examples: Sequence[Instruction],
    steps: int = 40,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    mask_prompt: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fine-tune model in place on examples in the chat format; returns each step's loss.

    The loss is train.py's cross-entropy; with mask_prompt it counts only the answer tokens.
    AdamW, warmup and cosine decay come from course_lib.train.
    """
    model = check_model("model", model)
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    learning_rate = check_float("learning_rate", learning_rate, minimum=0, min_inclusive=False)
    seed = check_seed("seed", seed)
    examples = check_examples(examples)
    end_id(tokenizer)  # a tokenizer that cannot write the chat format fails before any step
    config = TrainConfig(max_steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                         min_lr=learning_rate / 10, warmup_steps=max(1, steps // 10),
                         eval_interval=0, seed=seed, device=str(model.device), progress=False)
    optimizer = make_optimizer(model, config, model.device)
    rng = random.Random(seed)
    order: list[int] = []
    losses = []
    model.train()
    with seeded(seed):  # dropout's random numbers too: the seed fixes the whole run
        for step in progress_bar(range(steps), desc="SFT", enabled=progress):
            if len(order) < batch_size:  # one pass over the examples in random order, then again
                more = list(range(len(examples)))
                rng.shuffle(more)
                order += more
            batch, order = [examples[i] for i in order[:batch_size]], order[batch_size:]
            x, y = sft_batch(tokenizer, batch, mask_prompt, model.config.block_size)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            _, loss = model(x.to(model.device), y.to(model.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return losses


# ----- evaluation -----------------------------------------------------------------------------


def answer_loss(model: GPT, tokenizer, examples: Sequence[Instruction]) -> float:
    """Mean cross-entropy per answer token (nats), the prompt tokens masked out."""
    model = check_model("model", model)
    x, y = sft_batch(tokenizer, examples, True, model.config.block_size)
    with eval_mode(model):
        return (-sequence_logprobs(model, x, y).sum() / (y != -1).sum()).item()


def choice_scores(model: GPT, tokenizer, examples: Sequence[Instruction]) -> list[list[float]]:
    """For each example, the log-probability (nats) of each of its choices as the whole answer,
    <|endoftext|> included, so a choice that is the start of another does not win for free.
    All choices of all examples go through the model as one batch."""
    model = check_model("model", model)
    examples = check_examples(examples, with_choices=True)
    batch = [Instruction(e.kind, e.question, c, e.choices, e.source)
             for e in examples for c in e.choices]
    x, y = sft_batch(tokenizer, batch, True, model.config.block_size)
    with eval_mode(model):
        flat = sequence_logprobs(model, x, y).tolist()
    out, start = [], 0
    for e in examples:
        out.append(flat[start : start + len(e.choices)])
        start += len(e.choices)
    return out


def generate_answer(model: GPT, tokenizer, question: str, max_new_tokens: int = 8) -> str:
    """The model's greedy answer to one question, up to <|endoftext|> or max_new_tokens."""
    end_id(tokenizer)
    return "".join(stream_reply(model, tokenizer, prompt_ids=tokenizer.encode_ordinary(
        prompt_text(question)), max_new_tokens=max_new_tokens, temperature=0.0))


def evaluate_instructions(model: GPT, tokenizer, examples: Sequence[Instruction],
                          generate: bool = True) -> dict:
    """Scores on examples: choice accuracy (the likelier candidate is the right one) by kind and
    in all; exact-match accuracy of greedy answers for the one-word kinds; answer-token loss."""
    model = check_model("model", model)
    examples = check_examples(examples, with_choices=True)
    kinds = sorted({e.kind for e in examples})
    picked = [e.choices[max(range(len(s)), key=s.__getitem__)] == e.answer
              for e, s in zip(examples, choice_scores(model, tokenizer, examples), strict=True)]
    out = {"choice_accuracy": {k: _mean([p for p, e in zip(picked, examples, strict=True)
                                         if e.kind == k]) for k in kinds},
           "answer_loss": answer_loss(model, tokenizer, examples)}
    out["choice_accuracy"]["all"] = _mean(picked)
    if generate:
        short = [e for e in examples if e.kind != "continue"]
        hits = [generate_answer(model, tokenizer, e.question).strip() == e.answer for e in short]
        out["exact_match"] = {k: _mean([h for h, e in zip(hits, short, strict=True)
                                        if e.kind == k]) for k in sorted({e.kind for e in short})}
    return out


def check_examples(examples, with_choices: bool = False) -> list[Instruction]:
    """examples as a list, if it is a non-empty list of Instructions (with choices if asked)."""
    if isinstance(examples, Instruction):
        raise TypeError("examples must be a list of Instructions: wrap one in a list, [example]")
    examples = check_list("examples", examples, Instruction, item="Instruction",
                          hint="(make_instructions builds them)")
    for i, e in enumerate(examples):
        if with_choices and not e.choices:
            raise ValueError(f"examples[{i}] has no choices: choice accuracy needs at least one "
                             "candidate answer to score")
    return examples


def _mean(values: Sequence[bool | float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# ----- preference tuning: DPO -----------------------------------------------------------------


def preference_pairs(examples: Sequence[Instruction]) -> list[tuple[str, str, str]]:
    """(question, chosen, rejected): the right answer preferred over each wrong candidate."""
    examples = check_examples(examples)
    return [(e.question, e.answer, c) for e in examples for c in e.choices if c != e.answer]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """Mean DPO loss, -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)).

    Each argument holds summed log-probabilities of whole answers; a log-ratio is the policy's
    minus the frozen reference's (Rafailov et al. 2023, equation 7).
    """
    beta = check_float("beta", beta, minimum=0, min_inclusive=False)
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = (
        _logprobs(name, value) for name, value in (
            ("policy_chosen", policy_chosen), ("policy_rejected", policy_rejected),
            ("reference_chosen", reference_chosen), ("reference_rejected", reference_rejected)))
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, reference_chosen,
                                       reference_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape, got {shapes}")
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()


def _logprobs(name: str, value) -> torch.Tensor:
    """A log-probability argument of dpo_loss as a float tensor: a plain number is one too."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(check_float(name, value))
    return check_tensor(name, value, floating=True)


def _check_pairs(name: str, pairs) -> list[tuple[str, str, str]]:
    """pairs as a list, if it is a non-empty list of (question, chosen, rejected) strings."""
    pairs = check_list(name, pairs, item="(question, chosen, rejected) tuple")
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 3:
            raise ValueError(f"{name}[{i}] must be a (question, chosen, rejected) tuple of three "
                             f"strings, got {p!r:.60}")
        for part, text in zip(("question", "chosen", "rejected"), p, strict=True):
            check_str(f"{name}[{i}] ({part})", text)
    return pairs


def _pair_batches(tokenizer, pairs, block_size):
    chosen = [Instruction("", q, c, (), "") for q, c, _ in pairs]
    rejected = [Instruction("", q, r, (), "") for q, _, r in pairs]
    return sft_batch(tokenizer, chosen + rejected, True, block_size)


def dpo_step(policy: GPT, reference: GPT, optimizer: torch.optim.Optimizer, tokenizer,
             pairs: Sequence[tuple[str, str, str]], beta: float = 0.1) -> dict[str, float]:
    """One DPO update of policy on pairs; reference stays frozen. Returns the loss, each side's
    mean log-ratio against the reference, their difference (margin) and the fraction of pairs
    where the chosen answer's log-ratio is the larger."""
    policy, reference = check_model("policy", policy), check_model("reference", reference)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch optimizer, got {type(optimizer).__name__}")
    pairs = _check_pairs("pairs", pairs)
    x, y = _pair_batches(tokenizer, pairs, policy.config.block_size)
    n = len(pairs)
    with eval_mode(reference):
        ref = sequence_logprobs(reference, x, y)
    # Dropout off in the policy too (as TRL's DPOTrainer does by default): the log-ratios then
    # compare like with like, and start at exactly 0 when the policy equals the reference.
    with eval_mode(policy, no_grad=False):
        logps = sequence_logprobs(policy, x, y)
        loss = dpo_loss(logps[:n], logps[n:], ref[:n], ref[n:], beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    chosen, rejected = (logps[:n] - ref[:n]).detach(), (logps[n:] - ref[n:]).detach()
    return {"loss": loss.item(), "chosen_logratio": chosen.mean().item(),
            "rejected_logratio": rejected.mean().item(),
            "margin": (chosen - rejected).mean().item(),
            "pair_accuracy": (chosen > rejected).float().mean().item()}


def pair_logratios(policy: GPT, reference: GPT, tokenizer,
                   pairs: Sequence[tuple[str, str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) log-ratios log pi(answer) - log pi_ref(answer) for each pair, without
    gradients: how far the policy has moved each answer from the reference."""
    policy, reference = check_model("policy", policy), check_model("reference", reference)
    pairs = _check_pairs("pairs", pairs)
    x, y = _pair_batches(tokenizer, pairs, policy.config.block_size)
    with eval_mode(policy), eval_mode(reference):
        diff = sequence_logprobs(policy, x, y) - sequence_logprobs(reference, x, y)
    return diff[: len(pairs)], diff[len(pairs):]


def policy_optimizer(policy: GPT, reference: GPT, learning_rate: float) -> torch.optim.AdamW:
    """AdamW (no weight decay) over policy's trainable weights, once reference is known to be a
    separate frozen copy: DPO and GRPO both measure the policy against it."""
    if policy is reference or any(a is b for a, b in zip(policy.parameters(),
                                                         reference.parameters(), strict=False)):
        raise ValueError("reference must be a separate frozen copy of the policy "
                         "(copy.deepcopy(policy)), not the policy itself")
    return torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad],
                             lr=learning_rate, weight_decay=0.0)


def dpo_train(policy: GPT, reference: GPT, tokenizer, pairs: Sequence[tuple[str, str, str]],
              steps: int = 20, batch_size: int = 8, learning_rate: float = 1e-4,
              beta: float = 0.1, seed: int = 0, progress: bool = True,
              monitor: Sequence[tuple[str, str, str]] | None = None) -> dict[str, list]:
    """dpo_step over random batches of pairs; returns each step's figures as lists. With
    monitor (pairs not trained on), history["monitor_margin"] is their mean chosen-minus-rejected
    log-ratio after each step."""
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    learning_rate = check_float("learning_rate", learning_rate, minimum=0, min_inclusive=False)
    policy, reference = check_model("policy", policy), check_model("reference", reference)
    pairs = _check_pairs("pairs", pairs)
    if monitor is not None:
        monitor = _check_pairs("monitor", monitor)
    optimizer = policy_optimizer(policy, reference, learning_rate)
    rng = random.Random(check_seed("seed", seed))
    history: dict[str, list] = {}
    if monitor:  # the reference never changes: score the monitor pairs under it once
        mx, my = _pair_batches(tokenizer, monitor, policy.config.block_size)
        with eval_mode(reference):
            monitor_ref = sequence_logprobs(reference, mx, my)
    for _ in progress_bar(range(steps), desc="DPO", enabled=progress):
        info = dpo_step(policy, reference, optimizer, tokenizer,
                        rng.sample(list(pairs), min(batch_size, len(pairs))), beta)
        if monitor:
            with eval_mode(policy):
                diff = sequence_logprobs(policy, mx, my) - monitor_ref
            n = len(monitor)
            info["monitor_margin"] = (diff[:n] - diff[n:]).mean().item()
        for k, v in info.items():
            history.setdefault(k, []).append(v)
    return history


# ----- chatting with the shipped model ----------------------------------------------------------


def render_plain_chat(messages: Sequence[dict]) -> str:
    """messages ({"role", "content"} dicts) as one text in the plain chat format, ending with the
    answer header when the last message is the user's."""
    parts = []
    for m in _check_messages(messages):
        if m["role"] == "system":
            parts.append(SYSTEM + m["content"] + "\n")
        elif m["role"] == "user":
            parts.append(prompt_text(m["content"]))
        else:
            parts.append(m["content"] + END_OF_TEXT)
    return "".join(parts)


def encode_plain_chat(tokenizer, messages: Sequence[dict]) -> list[int]:
    """render_plain_chat's token ids; typed text never becomes <|endoftext|>."""
    ids: list[int] = []
    end_id(tokenizer)
    for m in _check_messages(messages):
        if m["role"] == "assistant":
            ids += tokenizer.encode_ordinary(m["content"]) + [end_id(tokenizer)]
        else:
            ids += tokenizer.encode_ordinary(render_plain_chat([m]))
    return ids


def _check_messages(messages: Sequence[dict]) -> Sequence[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{i}] must be a dict with role 'system', 'user' or "
                             f"'assistant', got {m!r:.80}")
        check_str(f"messages[{i}]['content']", m.get("content"), allow_empty=True)
    return messages


def stream_reply(model: GPT, tokenizer, messages: Sequence[dict] | None = None, *,
                 prompt_ids: Sequence[int] | None = None, max_new_tokens: int | None = None,
                 params: SamplingParams | None = None, **settings) -> Iterator[str]:
    """The shipped model's reply to messages (plain chat format) as UTF-8-safe text pieces,
    up to <|endoftext|> or max_new_tokens. prompt_ids, if given, replaces the rendered chat.

    Settings: a SamplingParams or its fields as keywords; by default up to 60 tokens at
    temperature 0.7. Everything is checked when it is called, before the first piece is asked
    for (max_new_tokens=0 is refused, as in chat.stream_chat).
    """
    model = check_model("model", model)
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    params = make_params(params, settings, max_new_tokens=60, temperature=0.7)
    check_int("max_new_tokens", params.max_new_tokens, minimum=1)
    params = dataclasses.replace(params, stop_ids=params.stop_ids + (end_id(tokenizer),))
    ids = list(prompt_ids) if prompt_ids is not None else encode_plain_chat(tokenizer, messages)
    return stream_text(model, tokenizer, ids, params=params)
