import math

import pytest
import torch

from course_lib.positional import (
    apply_rope,
    cosine_similarity_matrix,
    diagonal_spread,
    position_similarities,
    rope_pair_rotation,
    rope_score_matrix,
    rope_table,
    similarity_by_offset,
    sinusoidal,
)


def test_cosine_similarity_matrix():
    table = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    sim = cosine_similarity_matrix(table)
    assert torch.allclose(sim.diagonal(), torch.ones(3))
    assert sim[0, 1].item() == pytest.approx(0.0)
    assert sim[0, 2].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert torch.allclose(sim, sim.T)
    with pytest.raises(ValueError, match="table"):
        cosine_similarity_matrix(torch.ones(3))


def test_rope_table_rotates_one_vector_to_every_position():
    torch.manual_seed(0)
    x = torch.randn(16)
    table = rope_table(x, 10)
    assert table.shape == (10, 16)
    assert torch.allclose(table[0], x)
    for m in (3, 9):
        assert torch.allclose(table[m], apply_rope(x[None, None].expand(1, m + 1, 16))[0, m])
    with pytest.raises(ValueError, match="x must"):
        rope_table(torch.ones(2, 4), 3)


def test_rope_scores_depend_on_offset_only_and_learned_do_not():
    torch.manual_seed(0)
    q, k = torch.randn(32), torch.randn(32)
    scores = rope_score_matrix(q, k, 40)
    assert scores[0, 0].item() == pytest.approx((q @ k).item(), abs=1e-5)
    assert diagonal_spread(scores) < 1e-4
    assert diagonal_spread(sinusoidal(40, 32) @ sinusoidal(40, 32).T) < 1e-4
    assert diagonal_spread(torch.randn(40, 40)) > 0.1
    with pytest.raises(ValueError, match="square"):
        diagonal_spread(torch.ones(2, 3))
    with pytest.raises(ValueError, match="same shape"):
        rope_score_matrix(q, torch.randn(8), 4)


def test_similarity_by_offset():
    sim = cosine_similarity_matrix(sinusoidal(20, 8))
    offsets, row = similarity_by_offset(sim, 5)
    assert offsets.tolist() == list(range(-5, 15))
    assert row[5].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="position"):
        similarity_by_offset(sim, 20)


def test_position_similarities():
    learned = torch.randn(50, 12)
    sims = position_similarities(30, 12, learned)
    assert set(sims) == {"sinusoidal", "rotary", "learned"}
    for sim in sims.values():
        assert sim.shape == (30, 30)
        assert torch.allclose(sim.diagonal(), torch.ones(30), atol=1e-5)
    assert diagonal_spread(sims["sinusoidal"]) < 1e-4
    assert diagonal_spread(sims["rotary"]) < 1e-4
    assert diagonal_spread(sims["learned"]) > 0.1
    assert set(position_similarities(5, 4)) == {"sinusoidal", "rotary"}
    with pytest.raises(ValueError, match="learned"):
        position_similarities(60, 12, learned)


def test_rope_pair_rotation_matches_apply_rope():
    angle, wavelength = rope_pair_rotation(7, 2, 16)
    assert angle == pytest.approx(7 * 10000 ** (-4 / 16))
    assert wavelength == pytest.approx(2 * math.pi * 10000 ** (4 / 16))
    x = torch.zeros(1, 8, 16)
    x[..., 4] = 1.0  # the first coordinate of pair 2
    rotated = apply_rope(x)[0, 7, 4:6]
    assert torch.allclose(rotated, torch.tensor([math.cos(angle), math.sin(angle)]), atol=1e-5)
    # the same angle as the sinusoidal encoding's pair 2: (sin, cos) of position * frequency
    pe = sinusoidal(8, 16)
    assert pe[7, 4].item() == pytest.approx(math.sin(angle), abs=1e-5)
    with pytest.raises(ValueError, match="pair"):
        rope_pair_rotation(0, 8, 16)
    with pytest.raises(ValueError, match="position"):
        rope_pair_rotation(-1, 0, 16)
