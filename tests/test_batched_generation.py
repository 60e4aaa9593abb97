import pytest
import torch

from course_lib.pretrained import load_pretrained
from course_lib.sampling import generate, generate_batch

PROMPTS = ["ROMEO:\nO", "KING HENRY:\nWhat say you, lords, to this?", "First", "JULIET:\nAy me"]


def test_batch_equals_one_at_a_time():
    model, tokenizer = load_pretrained()
    ids = [tokenizer.encode(p) for p in PROMPTS]
    assert len({len(i) for i in ids}) == len(ids)  # all lengths differ
    out = generate_batch(model, ids, 40, temperature=0)
    for prompt, row in zip(ids, out, strict=True):
        assert row == generate(model, prompt, 40, temperature=0)[0].tolist()


def test_batch_past_the_context_window(small_model):
    # block_size 32: 20 + 25 tokens slide the window, for every row alike
    prompts = [[1, 2, 3], list(range(10, 30)), [5] * 7]
    out = generate_batch(small_model, prompts, 25, temperature=0)
    for prompt, row in zip(prompts, out, strict=True):
        assert len(row) == len(prompt) + 25
        assert row == generate(small_model, prompt, 25, temperature=0)[0].tolist()


def test_sampling_in_a_batch(small_model):
    prompts = [[1, 2, 3], [4, 5]]
    a = generate_batch(small_model, prompts, 10, temperature=1.0, top_k=3, seed=0)
    assert a == generate_batch(small_model, prompts, 10, temperature=1.0, top_k=3, seed=0)
    assert [row[: len(p)] for row, p in zip(a, prompts, strict=True)] == prompts
    # one prompt alone, sampled with the same seed, draws the same tokens
    single = generate(small_model, prompts[0], 10, temperature=1.0, top_k=3, seed=0)
    assert generate_batch(small_model, prompts[:1], 10, temperature=1.0, top_k=3,
                          seed=0)[0] == single[0].tolist()
    assert generate_batch(small_model, prompts, 0) == prompts


def test_bad_input(small_model):
    with pytest.raises(TypeError, match="prompts"):
        generate_batch(small_model, [], 5)
    with pytest.raises(TypeError, match="prompts"):
        generate_batch(small_model, torch.tensor([[1, 2]]), 5)
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        generate_batch(small_model, [[1, 2], []], 5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate_batch(small_model, [[1, 2], [500]], 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_batch(small_model, [[1, 2]], -2)
    with pytest.raises(ValueError, match="top_p"):
        generate_batch(small_model, [[1, 2]], 2, top_p=0)
