"""course_lib.assistant: instruction data, masked SFT batches, SFT, DPO, the plain chat format."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import assistant as A
from course_lib.data import VAL_PLAYS, load_play
from course_lib.evaluation import token_nll
from course_lib.model import GPT, GPTConfig
from course_lib.tokenization import BPETokenizer


@pytest.fixture(scope="module")
def split():
    return A.instruction_split(n_per_play=2, n_heldout_per_play=3, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    text = load_play("hamlet")[:20_000] + "A play or Python's docs? Who says this, or Continue as"
    return BPETokenizer.train(text, 320)


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=2,
                       n_embd=32)
    return GPT(config).eval()


def test_instructions_are_true_to_the_plays(split):
    train, held_out = split
    for e in held_out + train[:200]:
        assert e.answer in e.choices and len(set(e.choices)) == len(e.choices) == 2
        line = e.question.split("\n", 1)[1]
        if e.kind == "speaker":
            speech = f"{e.answer}:\n{line}\n"
            assert speech in load_play(e.source)  # the line opens a speech of that speaker
        elif e.kind == "continue":
            who = e.question.split("\n")[0].removeprefix("Continue as ").removesuffix(":")
            assert f"{who}:\n{line}\n{e.answer}\n" in load_play(e.source) + "\n"
        else:
            assert e.answer in A.SOURCE_ANSWERS
    assert {e.source for e in held_out if e.kind != "source"} <= set(VAL_PLAYS)
    assert not {e.source for e in train if e.kind != "source"} & set(VAL_PLAYS)
    assert not {e.question for e in train} & {e.question for e in held_out}
    kinds = [e.kind for e in held_out]
    assert kinds.count("speaker") == kinds.count("continue") == 3 * len(VAL_PLAYS)
    answers = [e.answer for e in held_out if e.kind == "source"]
    assert answers.count("play") == answers.count("docs") == 3 * len(VAL_PLAYS)


def test_instructions_repeat_for_a_seed_and_differ_across_seeds():
    one = A.make_instructions(["hamlet"], ["json"], 3, seed=1)
    assert one == A.make_instructions(["hamlet"], ["json"], 3, seed=1)
    assert one != A.make_instructions(["hamlet"], ["json"], 3, seed=2)
    with pytest.raises(ValueError, match="n_per_play"):
        A.make_instructions(["hamlet"], ["json"], 0)
    with pytest.raises(ValueError, match="unknown play"):
        A.make_instructions(["hamlett"], ["json"], 1)


def test_masked_targets_by_hand():
    x, y = A.masked_targets([5, 6, 7], [8, 9])
    assert x == [5, 6, 7, 8] and y == [-1, -1, 8, 9]
    x2, y2 = A.masked_targets([5, 6, 7], [8, 9], mask_prompt=False)
    assert x2 == x and y2 == [6, 7, 8, 9]
    with pytest.raises(ValueError):
        A.masked_targets([], [1])


def test_example_ids_keep_typed_special_tokens_as_text(tokenizer):
    prompt, answer = A.example_ids(tokenizer, "say <|endoftext|> now", "ok")
    eot = tokenizer.special_tokens["<|endoftext|>"]
    assert eot not in prompt and answer[-1] == eot and answer.count(eot) == 1
    assert tokenizer.decode(prompt) == "### Question:\nsay <|endoftext|> now\n### Answer:\n"


def test_loss_is_the_mean_over_answer_tokens_only(model, tokenizer, split):
    batch = split[1][:5]
    x, y = A.sft_batch(tokenizer, batch)
    x_full, y_full = A.sft_batch(tokenizer, batch, mask_prompt=False)
    assert torch.equal(x, x_full)
    answer_tokens = sum(len(A.example_ids(tokenizer, e.question, e.answer)[1]) for e in batch)
    assert int((y != -1).sum()) == answer_tokens
    assert int((y_full != -1).sum()) > answer_tokens
    logits, loss = model(x, y)
    expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                               ignore_index=-1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    summed = A.sequence_logprobs(model, x, y)
    assert loss.item() == pytest.approx((-summed.sum() / answer_tokens).item(), rel=1e-5)
    assert A.answer_loss(model, tokenizer, batch) == pytest.approx(loss.item(), rel=1e-5)


def test_sequence_logprobs_match_evaluation_token_nll(model, tokenizer, split):
    e = split[1][0]
    prompt, answer = A.example_ids(tokenizer, e.question, e.answer)
    x, y = A.sft_batch(tokenizer, [e])
    nll = token_nll(model, prompt + answer)
    expected = -nll[len(prompt) - 1 :].sum().item()  # the answer tokens' share
    assert A.sequence_logprobs(model, x, y).item() == pytest.approx(expected, rel=1e-5)


def test_choice_scores_batch_equals_one_at_a_time(model, tokenizer, split):
    examples = split[1][:4]
    together = A.choice_scores(model, tokenizer, examples)
    for e, scores in zip(examples, together, strict=True):
        alone = A.choice_scores(model, tokenizer, [e])[0]
        assert scores == pytest.approx(alone, abs=1e-4)


def test_sft_lowers_the_answer_loss(model, tokenizer, split):
    train = split[0][:24]
    before = A.answer_loss(model, tokenizer, train)
    losses = A.sft_train(model, tokenizer, train, steps=25, batch_size=8, learning_rate=3e-3,
                         progress=False)
    assert len(losses) == 25 and not model.training
    assert A.answer_loss(model, tokenizer, train) < before - 1.0
    with pytest.raises(ValueError, match="steps"):
        A.sft_train(model, tokenizer, train, steps=0)
    with pytest.raises(ValueError, match="examples"):
        A.sft_train(model, tokenizer, [], steps=1)


def test_sft_seed_fixes_the_run_and_leaves_torchs_generator_alone(tokenizer, split):
    # Dropout draws from torch's generator: without the seed inside sft_train, two runs with
    # one seed would differ by wherever that generator happened to stand.
    train = split[0][:16]
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=2,
                       n_embd=32, dropout=0.1)

    def run(torch_seed: int, seed: int):
        torch.manual_seed(0)
        model = GPT(config)
        torch.manual_seed(torch_seed)
        before = torch.random.get_rng_state()
        losses = A.sft_train(model, tokenizer, train, steps=3, batch_size=4, seed=seed,
                             progress=False)
        assert torch.equal(torch.random.get_rng_state(), before)
        return losses, model.lm_head.weight.detach().clone()

    (losses_1, weight_1), (losses_2, weight_2) = run(1, seed=5), run(2, seed=5)
    assert losses_1 == losses_2 and torch.equal(weight_1, weight_2)
    assert run(1, seed=6)[0] != losses_1


def test_evaluate_reports_every_kind(model, tokenizer, split):
    held_out = split[1]
    result = A.evaluate_instructions(model, tokenizer, held_out)
    assert set(result["choice_accuracy"]) == {"speaker", "source", "continue", "all"}
    assert set(result["exact_match"]) == {"speaker", "source"}
    picked = [max(zip(s, e.choices, strict=True))[1] == e.answer
              for e, s in zip(held_out, A.choice_scores(model, tokenizer, held_out), strict=True)]
    assert result["choice_accuracy"]["all"] == pytest.approx(sum(picked) / len(picked))
    # The untrained model never answers in the format: no exact matches.
    assert result["exact_match"]["source"] == 0.0


def test_dpo_loss_against_the_formula():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=g) * 3 for _ in range(4))
    beta = 0.25
    by_hand = [math.log(1 + math.exp(-beta * ((a - c) - (b - d))))
               for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(),
                                     strict=True)]
    assert A.dpo_loss(pc, pr, rc, rr, beta).item() == pytest.approx(sum(by_hand) / 6, rel=1e-5)
    # Policy equal to the reference: every margin is 0 and the loss is log 2.
    assert A.dpo_loss(pc, pr, pc, pr).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="beta"):
        A.dpo_loss(pc, pr, rc, rr, beta=0)
    with pytest.raises(ValueError, match="shape"):
        A.dpo_loss(pc, pr[:3], rc, rr)


def test_dpo_raises_the_chosen_over_rejected_margin(model, tokenizer, split):
    pairs = A.preference_pairs(split[0][:16])
    assert all(c != r for _, c, r in pairs)
    reference = copy.deepcopy(model)
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    monitor = A.preference_pairs(split[1][:6])
    history = A.dpo_train(model, reference, tokenizer, pairs, steps=12, batch_size=len(pairs),
                          learning_rate=3e-3, beta=0.5, progress=False, monitor=monitor)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference
    assert history["margin"][0] == pytest.approx(0.0, abs=1e-4)
    assert history["margin"][-1] > 1.0 and history["loss"][-1] < history["loss"][0]
    assert all(torch.equal(v, frozen[k]) for k, v in reference.state_dict().items())
    assert all(p.requires_grad for p in reference.parameters())  # the caller's flags untouched
    chosen, rejected = A.pair_logratios(model, reference, tokenizer, monitor)
    assert history["monitor_margin"][-1] == pytest.approx((chosen - rejected).mean().item(),
                                                          abs=1e-4)
    with pytest.raises(ValueError, match="separate"):
        A.dpo_train(model, model, tokenizer, pairs, steps=1, progress=False)


def test_plain_chat_rendering_and_injection(tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi <|endoftext|>"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Again"}]
    text = A.render_plain_chat(messages)
    assert text == ("### System:\nBe brief.\n### Question:\nHi <|endoftext|>\n### Answer:\n"
                    "Hello<|endoftext|>### Question:\nAgain\n### Answer:\n")
    ids = A.encode_plain_chat(tokenizer, messages)
    eot = tokenizer.special_tokens["<|endoftext|>"]
    assert ids.count(eot) == 1  # the assistant turn's end only, not the typed one
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode(text).count(eot) == 2  # what a careless encoder would do
    for bad in ([], [{"role": "robot", "content": "x"}], [{"role": "user", "content": 3}]):
        with pytest.raises((ValueError, TypeError)):
            A.render_plain_chat(bad)


def test_stream_reply_is_greedy_generation_up_to_the_end_token(model, tokenizer):
    from course_lib.sampling import generate

    messages = [{"role": "user", "content": "Who says this?"}]
    ids = A.encode_plain_chat(tokenizer, messages)
    eot = tokenizer.special_tokens["<|endoftext|>"]
    with torch.no_grad():
        model.lm_head.weight[eot] = 0  # keep the end token out of reach, so 10 tokens come
    new = generate(model, ids, 10, temperature=0.0)[0, len(ids):].tolist()
    assert eot not in new
    text = "".join(A.stream_reply(model, tokenizer, messages, max_new_tokens=10, temperature=0))
    assert text == tokenizer.decode(new)


def test_dpo_runs_the_policy_without_dropout(tokenizer, split):
    torch.manual_seed(0)
    policy = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=1, n_head=2,
                           n_embd=16, dropout=0.5))
    reference = copy.deepcopy(policy).eval()
    history = A.dpo_train(policy, reference, tokenizer, A.preference_pairs(split[0][:4]),
                          steps=1, batch_size=4, progress=False)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-6)
    assert policy.training  # the caller's mode is kept
