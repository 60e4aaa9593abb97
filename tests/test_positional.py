import math

import pytest
import torch

from course_lib.positional import LearnedPositionalEmbedding, apply_rope, sinusoidal


def test_sinusoidal_matches_the_paper_formula():
    pe = sinusoidal(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_sinusoidal_dot_product_depends_on_offset_only():
    pe = sinusoidal(200, 64)
    assert (pe[10] @ pe[15]).item() == pytest.approx((pe[100] @ pe[105]).item(), abs=1e-4)


def test_rope_scores_depend_only_on_the_offset():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 64), torch.randn(1, 1, 64)

    def score(m: int, n: int) -> float:
        return (apply_rope(q, offset=m)[0, 0] @ apply_rope(k, offset=n)[0, 0]).item()

    assert score(3, 1) == pytest.approx(score(40, 38), abs=1e-4)
    assert score(0, 5) == pytest.approx(score(17, 22), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def test_rope_is_a_rotation():
    x = torch.randn(2, 10, 32)
    assert torch.allclose(apply_rope(x).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(apply_rope(x)[:, 0], x[:, 0])  # position 0: angle 0


def test_learned_positions_and_bad_input():
    emb = LearnedPositionalEmbedding(8, 4)
    assert emb(3, offset=2).shape == (3, 4)
    with pytest.raises(ValueError, match="n_positions"):
        emb(5, offset=4)
    with pytest.raises(ValueError, match="d_model"):
        sinusoidal(4, 7)
    with pytest.raises(ValueError, match="n_positions"):
        sinusoidal(0, 8)
