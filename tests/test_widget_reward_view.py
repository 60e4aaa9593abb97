"""RewardCurveView: each update adds a point and the running mean; grpo_train can drive it."""

import copy

import pytest
import torch

from course_lib import rl
from course_lib.assistant import Instruction
from course_lib.data import load_play
from course_lib.model import GPT, GPTConfig
from course_lib.tokenization import BPETokenizer
from widgets.reward_view import RewardCurveView


def test_update_draws_the_points_and_running_mean():
    view = RewardCurveView(window=2)
    for step, r in enumerate([0.0, 1.0, 0.5]):
        view.update(step, {"reward": r, "kl": 0.01})
    assert list(view.figure.data[0].x) == [1, 2, 3]
    assert list(view.figure.data[0].y) == [0.0, 1.0, 0.5]
    assert list(view.figure.data[1].y) == pytest.approx([0.0, 0.5, 0.75])
    assert "step 3" in view.status.value and "0.50" in view.status.value


def test_grpo_train_drives_it():
    tok = BPETokenizer.train(load_play("hamlet")[:5_000] + "A play or Python's docs?", 280)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2,
                          n_embd=16)).eval()
    view = RewardCurveView()
    example = Instruction("source", "A play or Python's docs?\nTo be", "play", ("play", "docs"),
                          "")
    history = rl.grpo_train(model, copy.deepcopy(model), tok, [example], lambda a, e: len(a),
                            steps=3, questions_per_step=1, group_size=2, max_new_tokens=3,
                            progress=False, callback=view.update)
    assert view.rewards == history["reward"] and view.steps == [1, 2, 3]
