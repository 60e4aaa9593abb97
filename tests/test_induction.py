"""Induction scores: attention from the second copy of a random sequence to the token after
the earlier occurrence, against a by-hand reading of the attention maps."""

import math

import pytest
import torch

from course_lib.interpret import attention_maps, induction_scores


def test_induction_scores_read_the_right_stripe_of_the_attention_maps(small_model):
    scores = induction_scores(small_model, n_tokens=10, n_sequences=3, seed=5)
    assert scores.shape == (2, 4)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert torch.equal(scores, induction_scores(small_model, n_tokens=10, n_sequences=3, seed=5))
    g = torch.Generator().manual_seed(5)
    first = torch.randint(97, (3, 10), generator=g)
    by_hand = torch.zeros(2, 4)
    for row in first:
        maps = attention_maps(small_model, torch.cat([row, row]))  # (layer, head, 20, 20)
        for i in range(10, 20):  # token i repeats token i - 10; the one after that is i - 9
            by_hand += maps[:, :, i, i - 9] / 30
    assert torch.allclose(scores, by_hand, atol=1e-6)


def test_smollm2_has_induction_heads_and_the_shipped_model_has_none(smollm2):
    from course_lib.pretrained import load_pretrained

    ours = induction_scores(load_pretrained()[0])
    assert ours.max().item() < 0.1  # about uniform over the earlier positions
    smol = induction_scores(smollm2[0])
    assert smol.shape == (30, 9)
    assert smol.max().item() > 0.7 and int((smol > 0.4).sum()) >= 3


def test_bad_induction_arguments(small_model):
    with pytest.raises(ValueError, match="n_tokens"):
        induction_scores(small_model, n_tokens=17)  # two copies must fit block_size 32
    with pytest.raises(ValueError, match="n_sequences"):
        induction_scores(small_model, 8, n_sequences=0)
    with pytest.raises(TypeError, match="seed"):
        induction_scores(small_model, 8, seed=1.5)


def test_repeated_random_sequences_repeat_and_induction_scores_use_them():
    from course_lib.data import repeated_random_sequences

    ids = repeated_random_sequences(3, 10, 97, seed=5)
    assert ids.shape == (3, 20) and torch.equal(ids[:, :10], ids[:, 10:])
    g = torch.Generator().manual_seed(5)
    assert torch.equal(ids[:, :10], torch.randint(97, (3, 10), generator=g))
    assert not torch.equal(ids, repeated_random_sequences(3, 10, 97, seed=6))
    with pytest.raises(ValueError, match="length"):
        repeated_random_sequences(3, 0, 97)


def test_repeated_random_stream_runs_vary_in_length_and_repeat():
    from course_lib.data import repeated_random_stream

    stream = repeated_random_stream(5000, 50, 3, 9, seed=1)
    assert stream.shape == (5000,) and 0 <= int(stream.min()) and int(stream.max()) < 50
    # Walk the runs again with the same generator: every run is followed by itself.
    g = torch.Generator().manual_seed(1)
    pos, lengths = 0, set()
    while pos + 1 < 4000:
        m = int(torch.randint(3, 10, (1,), generator=g))
        run = torch.randint(50, (m,), generator=g)
        assert torch.equal(stream[pos : pos + m], run)
        assert torch.equal(stream[pos + m : pos + 2 * m], run)
        lengths.add(m)
        pos += 2 * m
    assert lengths == set(range(3, 10))
    with pytest.raises(ValueError, match="max_length"):
        repeated_random_stream(100, 50, 5, 4)


def test_repeat_loss_is_the_loss_on_the_second_copy(small_model):
    from course_lib.data import repeated_random_sequences
    from course_lib.interpret import repeat_loss

    ids = repeated_random_sequences(3, 10, 97, seed=2)
    logits = small_model(ids[:, :-1])[0]
    # Targets 11..19 of each row, predicted at positions 10..18.
    expected = torch.nn.functional.cross_entropy(logits[:, 10:].reshape(-1, 97),
                                                 ids[:, 11:].reshape(-1))
    assert abs(repeat_loss(small_model, 10, 3, seed=2) - expected.item()) < 1e-5
    mask = torch.ones(2, 4)
    mask[1, 2] = 0
    assert repeat_loss(small_model, 10, 3, 2, head_mask=mask) != repeat_loss(small_model, 10, 3, 2)


def test_a_fixed_repeat_length_grows_a_positional_head_not_an_induction_head():
    """Trained on runs of one length, a tiny attention-only model learns a layer-0 head that
    looks a fixed distance back: it scores like an induction head at that length and copies
    well, but fails at any other length, as no real induction head would."""
    from course_lib.interpret import repeat_loss, train_induction
    from course_lib.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32,
                          mlp="none"))
    history = train_induction(model, 150, min_length=8, max_length=8, eval_every=50,
                              progress=False)
    assert history["step"] == [0, 50, 100, 150]
    first, last = history["induction"][0], history["induction"][-1]
    assert first.max() < 0.2 and last.max() > 0.8
    assert divmod(int(last.argmax()), 2)[0] == 0  # the best head is in the first layer
    ln_v = math.log(32)
    assert history["repeat_loss"][0] > 0.9 * ln_v and history["repeat_loss"][-1] < 0.5 * ln_v
    assert induction_scores(model, 5, 8, seed=3).max() < 0.3  # another length: no copying
    assert repeat_loss(model, 5, 8, seed=3) > 0.9 * ln_v


def test_interpret_tools_read_an_attention_only_model():
    from course_lib.interpret import hidden_states, model_trace, parameter_counts
    from course_lib.model import GPT, GPTConfig
    from course_lib.tokenization import CharTokenizer

    tok = CharTokenizer.from_text("abcdefgh ")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2,
                          n_embd=16, mlp="none"))
    trace = model_trace(model, tok, tok.encode("abc abd"))
    assert torch.equal(trace.mlp_out, torch.zeros_like(trace.attn_out))
    # With no MLP, each block adds exactly its attention output to the stream.
    assert torch.allclose(trace.residual[1:] - trace.residual[:-1], trace.attn_out, atol=1e-6)
    assert len(hidden_states(model, tok.encode("abc"))) == 3
    assert parameter_counts(model)["mlp"] == 0
