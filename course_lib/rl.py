"""Reinforcement learning with a verifiable reward: GRPO (group-relative policy optimisation)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from importlib import resources

import torch

from course_lib.assistant import (
    Instruction,
    check_examples,
    end_id,
    make_instructions,
    masked_targets,
    pad_rows,
    policy_optimizer,
    prompt_text,
    target_logprobs,
)
from course_lib.data import DOC_MODULES_HELDOUT, VAL_PLAYS
from course_lib.model import GPT, eval_mode
from course_lib.sampling import generate_batch
from course_lib.train import progress_bar
from course_lib.validation import check_float, check_int, check_model, check_seed

Reward = Callable[[str, Instruction], float]


# ----- rewards a program can check ------------------------------------------------------------


def exact_answer_reward(answer: str, example: Instruction) -> float:
    """1.0 if the answer, stripped, is exactly the right one, else 0.0."""
    return float(answer.strip() == example.answer)


def contains_answer_reward(answer: str, example: Instruction) -> float:
    """1.0 if the right answer appears anywhere in the reply: a lenient checker, which a reply
    that names every candidate ("play or docs") satisfies without choosing."""
    return float(example.answer.lower() in answer.lower())


def format_reward(answer: str, example: Instruction) -> float:
    """1.0 if the answer is one of the question's candidates, right or wrong: a reward that
    checks only the form, which a policy can satisfy without knowing anything."""
    return float(answer.strip() in example.choices)


def rl_eval_set(per_play: int = 16, seed: int = 7) -> list[Instruction]:
    """Held-out "play or docs?" questions (the held-out plays and docstring modules) to measure
    accuracy before and after RL: 6 * per_play of them, half of each answer."""
    return [e for e in make_instructions(VAL_PLAYS, DOC_MODULES_HELDOUT, per_play, seed)
            if e.kind == "source"]


# ----- the group-relative advantage and the loss ----------------------------------------------


def group_advantages(rewards: Sequence[float] | torch.Tensor, group_size: int,
                     eps: float = 1e-4) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps) for every reward, flat, shape (n,).

    rewards holds consecutive groups of group_size answers to one question each. The standard
    deviation is torch.std's default (divides by group_size - 1), as TRL's GRPOTrainer; a
    group whose answers all scored alike gets advantage 0 and so teaches nothing.
    """
    group_size = check_int("group_size", group_size, minimum=2)
    eps = check_float("eps", eps, minimum=0.0)
    r = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
    if r.numel() == 0 or r.numel() % group_size:
        raise ValueError(f"rewards must hold whole groups of group_size={group_size}, "
                         f"got {r.numel()} rewards")
    g = r.view(-1, group_size)
    centered = g - g.mean(dim=1, keepdim=True)
    # A flat group is 0 / (0 + eps) = 0; written out so that eps=0 gives 0 there, not nan.
    scaled = centered / (g.std(dim=1, keepdim=True) + eps)
    return torch.where(centered == 0, torch.zeros_like(scaled), scaled).reshape(-1)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float = 0.2,
              beta: float = 0.04) -> torch.Tensor:
    """The GRPO objective, negated to be minimised (Shao et al. 2024, DeepSeekMath, eq. 3).

    logps, old_logps, ref_logps: (answers, tokens) log-probabilities of each sampled token under
    the policy being trained, the policy that sampled it, and the frozen reference; advantages:
    (answers,); mask: (answers, tokens), True on the answer's tokens. Per token:
    min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) - beta * KL, with ratio = pi / pi_old and
    the unbiased KL estimate pi_ref / pi - log(pi_ref / pi) - 1 (eq. 4); averaged over each
    answer's tokens, then over answers.
    """
    clip_eps = check_float("clip_eps", clip_eps, minimum=0.0)
    beta = check_float("beta", beta, minimum=0.0)
    shapes = {tuple(t.shape) for t in (logps, old_logps, ref_logps, mask)}
    if len(shapes) != 1 or logps.dim() != 2:
        raise ValueError(f"logps, old_logps, ref_logps and mask must share one (answers, tokens) "
                         f"shape, got {shapes}")
    if tuple(advantages.shape) != (logps.shape[0],):
        raise ValueError(f"advantages must have shape ({logps.shape[0]},), one per answer, got "
                         f"{tuple(advantages.shape)}")
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    a = advantages[:, None].to(logps.dtype)
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    per_token = -(surrogate - beta * kl_estimate(logps, ref_logps))
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per token, the unbiased estimate of KL(pi || pi_ref) that GRPO penalises (DeepSeekMath
    eq. 4): pi_ref / pi - log(pi_ref / pi) - 1, never negative."""
    log_ref_over_pi = ref_logps - logps
    return torch.exp(log_ref_over_pi) - log_ref_over_pi - 1


# ----- sampling groups and scoring their tokens -----------------------------------------------


def sample_groups(model: GPT, tokenizer, examples: Sequence[Instruction], group_size: int,
                  max_new_tokens: int = 8, temperature: float = 1.0, seed: int | None = 0
                  ) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """group_size sampled answers to each example's question, in one batch.

    Returns (prompt ids, answer ids, answer texts), group by group: answer ids end at the first
    <|endoftext|> (kept, so stopping is learned too), or after max_new_tokens.
    """
    group_size = check_int("group_size", group_size, minimum=1)
    if not examples:
        raise ValueError("examples is empty: give at least one Instruction")
    stop = end_id(tokenizer)
    prompts, out = [], []
    for i, e in enumerate(examples):  # one batch per group: its prompts share one length
        group = [tokenizer.encode_ordinary(prompt_text(e.question))] * group_size
        prompts += group
        out += generate_batch(model, group, max_new_tokens=max_new_tokens,
                              temperature=temperature, stop_ids=(stop,),
                              seed=None if seed is None else seed + i)
    answers = []
    for p, seq in zip(prompts, out, strict=True):
        new = seq[len(p):]
        answers.append(new[: new.index(stop) + 1] if stop in new else new)
    texts = [tokenizer.decode([t for t in a if t != stop]) for a in answers]
    return prompts, answers, texts


def token_logprobs(model: GPT, prompts: Sequence[Sequence[int]],
                   answers: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities, mask), each (answers, tokens): the log-probability of every answer
    token given what precedes it, and True where a column holds an answer token. Runs with
    gradients if the caller has them on."""
    rows = [masked_targets(p, a) for p, a in zip(prompts, answers, strict=True)]
    return target_logprobs(model, *pad_rows(rows, pad=0))


# ----- training -------------------------------------------------------------------------------


def grpo_step(policy: GPT, reference: GPT, optimizer: torch.optim.Optimizer, tokenizer,
              examples: Sequence[Instruction], reward_fn: Reward, group_size: int = 8,
              clip_eps: float = 0.2, beta: float = 0.04, updates: int = 1,
              temperature: float = 1.0, max_new_tokens: int = 8, seed: int | None = 0
              ) -> dict[str, float]:
    """Sample a group per question, score, normalise within groups, take `updates` clipped
    policy-gradient steps on that one batch (the ratio to the sampling policy moves from 1 only
    after the first). Returns the mean reward, the loss, the mean KL to the reference per token,
    and the fraction of groups whose rewards all agreed (nothing to learn from them)."""
    updates = check_int("updates", updates, minimum=1)
    prompts, answers, texts = sample_groups(policy, tokenizer, examples, group_size,
                                            max_new_tokens, temperature, seed)
    rewards = torch.tensor([reward_fn(t, e) for t, e in
                            zip(texts, [e for e in examples for _ in range(group_size)],
                                strict=True)], dtype=torch.float32)
    advantages = group_advantages(rewards, group_size)
    with torch.no_grad(), eval_mode(policy), eval_mode(reference):
        old, mask = token_logprobs(policy, prompts, answers)
        ref, _ = token_logprobs(reference, prompts, answers)
    with eval_mode(policy, no_grad=False):  # dropout off: the ratio starts at exactly 1
        for _ in range(updates):
            logps, _ = token_logprobs(policy, prompts, answers)
            loss = grpo_loss(logps, old, ref, advantages, mask, clip_eps, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    # Masked before the estimate: padding's log-probabilities never reach exp().
    kl = (kl_estimate(logps.detach() * mask, ref * mask) * mask).sum() / mask.sum()
    flat = rewards.view(-1, group_size)
    return {"reward": rewards.mean().item(), "loss": loss.item(), "kl": kl.item(),
            "flat_groups": (flat.max(1).values == flat.min(1).values).float().mean().item()}


def grpo_train(policy: GPT, reference: GPT, tokenizer, examples: Sequence[Instruction],
               reward_fn: Reward = exact_answer_reward, steps: int = 20,
               questions_per_step: int = 4, group_size: int = 8, learning_rate: float = 1e-4,
               clip_eps: float = 0.2, beta: float = 0.04, updates: int = 1,
               temperature: float = 1.0, max_new_tokens: int = 8, seed: int = 0,
               progress: bool = True, callback: Callable[[int, dict], None] | None = None
               ) -> dict[str, list]:
    """grpo_step over random batches of questions; returns each step's figures as lists.
    callback(step, info), if given, is called after every step (a live reward curve)."""
    steps = check_int("steps", steps, minimum=1)
    questions_per_step = check_int("questions_per_step", questions_per_step, minimum=1)
    learning_rate = check_float("learning_rate", learning_rate, minimum=0, min_inclusive=False)
    seed = check_seed("seed", seed)
    policy, reference = check_model("policy", policy), check_model("reference", reference)
    examples = check_examples(examples)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of (step, info), got {callback!r}")
    optimizer = policy_optimizer(policy, reference, learning_rate)
    rng = random.Random(seed)
    history: dict[str, list] = {}
    bar = progress_bar(range(steps), desc="GRPO", enabled=progress)
    for step in bar:
        batch = rng.sample(list(examples), min(questions_per_step, len(examples)))
        info = grpo_step(policy, reference, optimizer, tokenizer, batch, reward_fn, group_size,
                         clip_eps, beta, updates, temperature, max_new_tokens,
                         seed=rng.randrange(2**31))
        for k, v in info.items():
            history.setdefault(k, []).append(v)
        bar.set_postfix(reward=f"{info['reward']:.2f}")
        if callback is not None:
            callback(step, info)
    return history


def accuracy_items(model: GPT, tokenizer, examples: Sequence[Instruction],
                   reward_fn: Reward = exact_answer_reward, max_new_tokens: int = 8
                   ) -> list[float]:
    """reward_fn of the greedy answer to each example (0/1 per question, for an interval)."""
    if not examples:
        raise ValueError("examples is empty: give at least one Instruction")
    prompts = [tokenizer.encode_ordinary(prompt_text(e.question)) for e in examples]
    stop = end_id(tokenizer)
    out = generate_batch(model, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                         stop_ids=(stop,))
    scores = []
    for p, seq, e in zip(prompts, out, examples, strict=True):
        new = seq[len(p):]
        new = new[: new.index(stop)] if stop in new else new
        scores.append(reward_fn(tokenizer.decode(new), e))
    return scores


def sampled_accuracy(model: GPT, tokenizer, examples: Sequence[Instruction],
                     group_size: int = 8, reward_fn: Reward = exact_answer_reward,
                     temperature: float = 1.0, max_new_tokens: int = 8, seed: int | None = 0
                     ) -> list[float]:
    """Per example, the mean reward_fn of group_size answers sampled as GRPO samples them:
    the quantity GRPO raises, measurable on questions it never trained on."""
    _, _, texts = sample_groups(model, tokenizer, examples, group_size, max_new_tokens,
                                temperature, seed)
    return [sum(reward_fn(t, e) for t in texts[i * group_size:(i + 1) * group_size])
            / group_size for i, e in enumerate(examples)]


def load_grpo_run() -> dict:
    """The longer GRPO runs' results that ship with the course (scripts/train_grpo.py wrote
    course_lib/assets/grpo_run.json): settings, reward histories, per-question accuracies."""
    return json.loads(resources.files("course_lib").joinpath("assets", "grpo_run.json")
                      .read_text("utf-8"))
