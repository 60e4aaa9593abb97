"""course_lib.rl: the group-relative advantage and GRPO loss against DeepSeekMath's formula on
numbers worked by hand, sampling groups, and a GRPO step that moves the policy the right way."""

import copy
import math

import pytest
import torch

from course_lib import rl
from course_lib.assistant import Instruction, end_id
from course_lib.data import load_play
from course_lib.model import GPT, GPTConfig
from course_lib.tokenization import BPETokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.train(load_play("hamlet")[:20_000] + "A play or Python's docs?", 300)


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2,
                         n_embd=32)).eval()


EXAMPLES = [Instruction("source", "A play or Python's docs?\nTo be or not to be", "play",
                        ("play", "docs"), ""),
            Instruction("source", "A play or Python's docs?\nReturn a new list.", "docs",
                        ("play", "docs"), "")]


def test_group_advantages_by_hand():
    # Group 1: rewards 1, 0: mean 0.5, sample std sqrt((0.25 + 0.25) / 1) = 0.70711.
    # Group 2: 0, 0, so std 0 and every advantage 0 (nothing to learn from a flat group).
    a = rl.group_advantages([1.0, 0.0, 0.0, 0.0], group_size=2, eps=0.0).tolist()
    assert a[0] == pytest.approx(0.5 / math.sqrt(0.5)) and a[1] == pytest.approx(-0.5 /
                                                                                 math.sqrt(0.5))
    assert a[2:] == [0.0, 0.0]
    # Group of 4: rewards 2, 0, 0, 0: mean 0.5, sample std sqrt((2.25 + 3 * 0.25) / 3) = 1.
    b = rl.group_advantages(torch.tensor([2.0, 0, 0, 0]), 4, eps=1e-4)
    assert b.tolist() == pytest.approx([1.5 / 1.0001, -0.5 / 1.0001, -0.5 / 1.0001,
                                        -0.5 / 1.0001], abs=1e-6)
    with pytest.raises(ValueError, match="whole groups"):
        rl.group_advantages([1.0, 0.0, 1.0], 2)
    with pytest.raises(ValueError, match="group_size"):
        rl.group_advantages([1.0, 0.0], 1)


def test_grpo_loss_equals_deepseekmath_formula_by_hand():
    """DeepSeekMath (Shao et al. 2024) eq. 3 with the KL of eq. 4, two answers, beta 0.04,
    epsilon 0.2, worked out with a pencil:

    answer 1 (A = +1, two tokens):
      token 1: ratio 0.5 / 0.4 = 1.25, clipped to 1.2; min(1.25, 1.2) * 1 = 1.2;
               KL = 0.5/0.5 - log(1) - 1 = 0
      token 2: ratio 1, so 1; KL = 0.5/0.25 - log 2 - 1 = 0.306853
      mean over its tokens: (1.2 + 1 - 0.04 * 0.306853) / 2 = 1.093863
    answer 2 (A = -1, one token; its second column is padding):
      ratio 0.8 / 0.5 = 1.6; min(-1.6, -1.2) = -1.6 (the clip does not help a worse answer);
      KL = 0.4/0.8 - log 0.5 - 1 = 0.193147; -1.6 - 0.04 * 0.193147 = -1.607726
    objective = (1.093863 - 1.607726) / 2 = -0.256931; the loss is its negative.
    """
    log = math.log
    logps = torch.tensor([[log(0.5), log(0.25)], [log(0.8), 0.0]])
    old = torch.tensor([[log(0.4), log(0.25)], [log(0.5), 0.0]])
    ref = torch.tensor([[log(0.5), log(0.5)], [log(0.4), 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    loss = rl.grpo_loss(logps, old, ref, torch.tensor([1.0, -1.0]), mask, clip_eps=0.2,
                        beta=0.04)
    assert loss.item() == pytest.approx(0.256931, abs=1e-6)
    # Without the KL term: -(2.2 / 2 - 1.6) / 2 = 0.25.
    no_kl = rl.grpo_loss(logps, old, ref, torch.tensor([1.0, -1.0]), mask, beta=0.0)
    assert no_kl.item() == pytest.approx(0.25, abs=1e-6)


def test_grpo_gradient_at_ratio_one_is_the_policy_gradient():
    # With pi = pi_old and pi = pi_ref, the gradient wrt each token's log-prob is -A / (|o| G).
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([0.7, -0.7])
    rl.grpo_loss(logps, logps.detach(), logps.detach(), adv, mask).backward()
    assert logps.grad.flatten().tolist() == pytest.approx([-0.7 / 4, -0.7 / 4, 0.7 / 2, 0.0])


def test_grpo_loss_rejects_bad_shapes():
    t = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages"):
        rl.grpo_loss(t, t, t, torch.zeros(3), t.bool())
    with pytest.raises(ValueError, match="one \\(answers, tokens\\) shape"):
        rl.grpo_loss(t, t, torch.zeros(2, 2), torch.zeros(2), t.bool())
    with pytest.raises(ValueError, match="clip_eps"):
        rl.grpo_loss(t, t, t, torch.zeros(2), t.bool(), clip_eps=-1)


def test_rewards():
    e = EXAMPLES[0]
    assert rl.exact_answer_reward(" play", e) == 1.0 and rl.exact_answer_reward("docs", e) == 0.0
    assert rl.format_reward("docs", e) == 1.0 and rl.format_reward("Hamlet", e) == 0.0


def test_sample_groups_cut_at_end_of_text(model, tokenizer):
    prompts, answers, texts = rl.sample_groups(model, tokenizer, EXAMPLES, group_size=3,
                                               max_new_tokens=5, seed=1)
    assert len(prompts) == len(answers) == len(texts) == 6
    stop = end_id(tokenizer)
    for a in answers:
        assert 1 <= len(a) <= 5 and stop not in a[:-1]
    again = rl.sample_groups(model, tokenizer, EXAMPLES, group_size=3, max_new_tokens=5, seed=1)
    assert again[1] == answers  # seeded


def test_grpo_step_raises_the_rewarded_answers(model, tokenizer):
    # A reward the tiny random model can earn: longer answers score more.
    def longer(answer, _e):
        return float(len(answer))

    reference = copy.deepcopy(model)
    prompts, answers, texts = rl.sample_groups(model, tokenizer, EXAMPLES, 4, 6, seed=3)
    adv = rl.group_advantages([longer(t, None) for t in texts], 4)
    with torch.no_grad():
        before, mask = rl.token_logprobs(model, prompts, answers)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    info = rl.grpo_step(model, reference, optimizer, tokenizer, EXAMPLES, longer,
                        group_size=4, max_new_tokens=6, seed=3, beta=0.0)
    with torch.no_grad():
        after, _ = rl.token_logprobs(model, prompts, answers)
    moved = ((after - before) * mask).sum(1)
    assert moved[adv > 0].mean() > moved[adv < 0].mean()
    assert info["reward"] == pytest.approx(sum(longer(t, None) for t in texts) / 8)


def test_grpo_train_needs_a_separate_reference(model, tokenizer):
    with pytest.raises(ValueError, match="reference"):
        rl.grpo_train(model, model, tokenizer, EXAMPLES, steps=1, progress=False)
    history = rl.grpo_train(model, copy.deepcopy(model), tokenizer, EXAMPLES, steps=2,
                            questions_per_step=2, group_size=2, progress=False)
    assert len(history["reward"]) == 2 and history["kl"][0] >= 0


def test_accuracy_items_equal_one_at_a_time_answers(model, tokenizer):
    from course_lib.assistant import generate_answer

    scores = rl.accuracy_items(model, tokenizer, EXAMPLES, reward_fn=lambda a, e: a)
    assert scores == [generate_answer(model, tokenizer, e.question) for e in EXAMPLES]


def test_sampled_accuracy_is_the_mean_reward_of_grpos_samples(model, tokenizer):
    def distinct(answer, example):  # a reward that varies from answer to answer
        return float(len(set(answer)))

    # Greedy "sampling" gives every answer of a group the greedy one: accuracy_items exactly.
    greedy = rl.sampled_accuracy(model, tokenizer, EXAMPLES, group_size=3, temperature=0.0,
                                 reward_fn=distinct)
    assert greedy == rl.accuracy_items(model, tokenizer, EXAMPLES, reward_fn=distinct)
    sampled = rl.sampled_accuracy(model, tokenizer, EXAMPLES, group_size=4, seed=3,
                                  reward_fn=distinct)
    _, _, texts = rl.sample_groups(model, tokenizer, EXAMPLES, 4, seed=3)
    assert len({distinct(t, None) for t in texts}) > 1
    assert sampled == [sum(distinct(t, None) for t in texts[4 * i:4 * i + 4]) / 4
                       for i in range(len(EXAMPLES))]


@pytest.mark.parametrize("change, error, words", [
    (dict(policy=None), TypeError, "policy"),
    (dict(examples=[{"prompt": "2+2?", "response": "4"}]), TypeError, "Instruction"),
    (dict(examples=[]), ValueError, "examples"),
    (dict(callback="print"), TypeError, "callback"),
])
def test_grpo_train_refuses_bad_input_by_name(model, tokenizer, change, error, words):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = dict(policy=model, reference=copy.deepcopy(model), tokenizer=tokenizer,
                examples=EXAMPLES, steps=1, progress=False)
    with pytest.raises(error, match=words):
        rl.grpo_train(**{**args, **change})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
