import copy
import dataclasses

import pytest
import torch

from course_lib.model import GPT, GPTConfig
from course_lib.pretrained import load_pretrained
from course_lib.sampling import (
    PromptLookupDraft,
    accept_or_resample,
    generate,
    next_token_probs,
    speculative_generate,
    speculative_rounds,
)

PROMPTS = ["ROMEO:\nO, she doth teach the", "KING HENRY:\nWhat say you, lords", "First"]


def _truncated(model, n_layer):
    draft = copy.deepcopy(model)
    draft.transformer.h = draft.transformer.h[:n_layer]
    draft.config = dataclasses.replace(draft.config, n_layer=n_layer)
    return draft


@pytest.fixture(scope="module")
def shipped():
    return load_pretrained()


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_equals_greedy_decoding_with_a_shallow_draft(shipped, k):
    model, tokenizer = shipped
    draft = _truncated(model, 2)
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        expected = generate(model, ids, 60, temperature=0)
        got, stats = speculative_generate(model, draft, ids, 60, num_draft_tokens=k,
                                          return_stats=True)
        assert torch.equal(got, expected)
        assert stats["rounds"] < 60 and 0 < stats["accepted"] <= stats["proposed"]


def test_greedy_with_prompt_lookup_and_past_the_context_window(shipped):
    model, tokenizer = shipped
    ids = tokenizer.encode("ROMEO:\nO, she doth teach the torches to burn bright! " * 4)[:100]
    expected = generate(model, ids, 60, temperature=0)  # 160 tokens > block_size 128
    assert expected.shape[1] > model.config.block_size
    got, stats = speculative_generate(model, PromptLookupDraft(), ids, 60, return_stats=True)
    assert torch.equal(got, expected)
    assert stats["accepted"] > 0
    got = speculative_generate(model, _truncated(model, 1), ids, 60, num_draft_tokens=5)
    assert torch.equal(got, expected)


def test_the_target_as_its_own_draft_accepts_everything(shipped):
    model, tokenizer = shipped
    ids = tokenizer.encode(PROMPTS[0])
    out, stats = speculative_generate(model, model, ids, 25, num_draft_tokens=4,
                                      return_stats=True)
    assert stats["acceptance_rate"] == 1.0
    assert stats["rounds"] == 5 and stats["tokens_per_round"] == 5.0  # 4 drafted + 1 bonus
    assert torch.equal(out, generate(model, ids, 25, temperature=0))
    rounds = list(speculative_rounds(model, model, ids, 25, 4))
    assert [r.accepted for r in rounds] == [4, 4, 4, 4, 4]


def test_rejection_rule_keeps_the_target_distribution():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    q = torch.tensor([0.1, 0.1, 0.1, 0.2, 0.5])  # a bad draft, even proposing what p forbids
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    n = 20000
    for _ in range(n):
        token = int(torch.multinomial(q, 1, generator=g))
        _, out = accept_or_resample(p, q, token, g)
        counts[out] += 1
    assert (counts / n - p).abs().max() < 0.015
    assert counts[4] == 0
    # accepted with probability min(1, p/q): a token the target likes more is always kept
    assert all(accept_or_resample(p, q, 0, g)[0] for _ in range(50))


def _tiny(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=6, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()


def test_sampled_speculative_decoding_keeps_the_target_distribution():
    target, draft = _tiny(0), _tiny(1)
    with torch.no_grad():  # sharpen the models so target and draft clearly disagree
        target.lm_head.weight.mul_(30)
        draft.lm_head.weight.mul_(30)
    prompt = [1, 2, 3]
    p1 = next_token_probs(target, prompt)[0]
    p2 = sum(p1[a] * next_token_probs(target, prompt + [a])[0] for a in range(6))
    q1 = next_token_probs(draft, prompt)[0]
    assert 0.5 * (p1 - q1).abs().sum() > 0.15  # the draft alone would be measurably wrong
    n = 1500
    first, second = torch.zeros(6), torch.zeros(6)
    for seed in range(n):
        out = speculative_generate(target, draft, prompt, 2, num_draft_tokens=2,
                                   temperature=1.0, seed=seed)
        first[out[0, 3]] += 1
        second[out[0, 4]] += 1
    assert 0.5 * (first / n - p1).abs().sum() < 0.05
    assert 0.5 * (second / n - p2).abs().sum() < 0.05


def test_sampling_is_seeded_and_filtered(shipped):
    model, tokenizer = shipped
    ids = tokenizer.encode(PROMPTS[1])
    draft = _truncated(model, 2)
    a = speculative_generate(model, draft, ids, 30, temperature=0.8, top_k=5, seed=3)
    b = speculative_generate(model, draft, ids, 30, temperature=0.8, top_k=5, seed=3)
    assert torch.equal(a, b) and a.shape == (1, len(ids) + 30)
    c = speculative_generate(model, PromptLookupDraft(), ids, 30, temperature=0.8, top_p=0.5,
                             seed=3)
    assert c.shape == a.shape
    # every token sampled with top_k=1 is the greedy one
    assert torch.equal(speculative_generate(model, draft, ids, 20, temperature=1.0, top_k=1,
                                            seed=0), generate(model, ids, 20, temperature=0))


def test_prompt_lookup_proposals():
    d = PromptLookupDraft(max_ngram=3)
    assert d.propose([5, 6, 7, 8, 9, 5, 6, 7], 3) == [8, 9, 5]  # '5 6 7' seen before
    assert d.propose([1, 2, 3, 9, 2, 3, 4, 2, 3], 2) == [4, 2]  # latest '2 3' wins
    assert d.propose([1, 2, 3, 4], 3) == []  # nothing repeats
    assert d.propose([7, 7], 4) == [7]
    assert PromptLookupDraft(max_ngram=2, min_ngram=2).propose([1, 2, 9, 2], 2) == []
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookupDraft(max_ngram=2, min_ngram=3)


def test_bad_input(shipped):
    model, _ = shipped
    with pytest.raises(TypeError, match="draft must be"):
        speculative_generate(model, "small", [1, 2], 5)
    with pytest.raises(ValueError, match="share a vocabulary"):
        speculative_generate(model, _tiny(0), [1, 2], 5)
    with pytest.raises(ValueError, match="num_draft_tokens"):
        speculative_generate(model, PromptLookupDraft(), [1, 2], 5, num_draft_tokens=0)
    with pytest.raises(ValueError, match="one sequence"):
        speculative_generate(model, PromptLookupDraft(), [[1, 2], [3, 4]], 5)
    with pytest.raises(ValueError, match="temperature"):
        speculative_generate(model, PromptLookupDraft(), [1, 2], 5, temperature=-1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(model, PromptLookupDraft(), [1, 2], -1)
    out = speculative_generate(model, PromptLookupDraft(), [1, 2], 0)
    assert out.tolist() == [[1, 2]]
