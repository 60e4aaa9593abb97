"""Induction scores: attention from the second copy of a random sequence to the token after
the earlier occurrence, against a by-hand reading of the attention maps."""

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
