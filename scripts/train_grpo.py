"""A longer GRPO run on the shipped model after SFT than lesson 13 can afford live; the result
goes to course_lib/assets/grpo_run.json, which the lesson reads.

    OMP_NUM_THREADS=1 taskset -c 0 python scripts/train_grpo.py [--steps 100]

The same SFT as the lesson (30 steps), then GRPO on the training "play or docs?" questions
with two rewards a program checks: the exact answer, and a lenient one (the right word
anywhere in the reply) that a policy can satisfy without choosing. Held-out accuracy is stored
per question, greedy (the exact answer) and sampled (the mean exact reward of 8 answers
sampled as GRPO samples them), so the lesson can put intervals on both.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from course_lib import rl
from course_lib.assistant import instruction_split, sft_train
from course_lib.files import write_text
from course_lib.pretrained import load_pretrained

SFT = {"steps": 30, "batch_size": 12, "learning_rate": 3e-3}  # as in lesson 13
GRPO = {"questions_per_step": 4, "group_size": 8, "learning_rate": 1e-4, "beta": 0.04,
        "clip_eps": 0.2, "updates": 1, "temperature": 1.0, "max_new_tokens": 8}
REWARDS = {"exact": rl.exact_answer_reward, "contains": rl.contains_answer_reward}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "course_lib"
                                             / "assets" / "grpo_run.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, tokenizer = load_pretrained()
    train_set, _ = instruction_split()
    sft = copy.deepcopy(model)
    sft_train(sft, tokenizer, train_set, progress=False, **SFT)
    questions = [e for e in train_set if e.kind == "source"]
    evaluation = rl.rl_eval_set()
    out: dict = {"command": f"OMP_NUM_THREADS=1 taskset -c 0 python scripts/train_grpo.py "
                           f"--steps {args.steps}",
                 "sft": SFT, "grpo": {**GRPO, "steps": args.steps},
                 "eval_questions": len(evaluation),
                 "sft_items": rl.accuracy_items(sft, tokenizer, evaluation),
                 "sft_sampled": rl.sampled_accuracy(sft, tokenizer, evaluation, seed=1),
                 "runs": {}}
    for name, reward in REWARDS.items():
        policy = copy.deepcopy(sft)
        start = time.process_time()
        history = rl.grpo_train(policy, sft, tokenizer, questions, reward, steps=args.steps,
                                seed=0, progress=True, **GRPO)
        seconds = time.process_time() - start
        _, _, texts = rl.sample_groups(policy, tokenizer, evaluation[:16], 4, seed=1)
        out["runs"][name] = {
            "history": {k: [round(v, 4) for v in vs] for k, vs in history.items()},
            "cpu_seconds": round(seconds, 1),
            "items": rl.accuracy_items(policy, tokenizer, evaluation),
            "reward_items": rl.accuracy_items(policy, tokenizer, evaluation, reward),
            "sampled": rl.sampled_accuracy(policy, tokenizer, evaluation, seed=1),
            "greedy_answers": [rl.accuracy_items(policy, tokenizer, [e], lambda a, e: a)[0]
                               for e in evaluation[:12]],
            "samples": texts}
        print(name, "accuracy", sum(out["runs"][name]["items"]) / len(evaluation),
              f"{seconds:.0f} CPU s", flush=True)
    path = Path(args.out)
    write_text(path, json.dumps(out, indent=1) + "\n")
    print("wrote", path)
    return out


if __name__ == "__main__":
    main()
