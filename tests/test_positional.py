"""Positional encodings: sinusoidal, learned, rotary; comparing them; bad input."""

import math

import numpy as np
import pytest
import torch

from course_lib.positional import (
    apply_rope,
    cosine_similarity_matrix,
    diagonal_spread,
    position_similarities,
    rope_angles,
    rope_pair_rotation,
    rope_score_matrix,
    rope_table,
    similarity_by_offset,
    sinusoidal,
)


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


def test_sinusoidal_bad_input():
    with pytest.raises(ValueError, match="d_model"):
        sinusoidal(4, 7)
    with pytest.raises(ValueError, match="n_positions"):
        sinusoidal(0, 8)


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


def test_the_cosine_matrix_is_the_embeddings_one():
    from course_lib.vectors import cosine_similarity

    table = torch.randn(7, 6, dtype=torch.float64)
    torch.testing.assert_close(cosine_similarity_matrix(table),
                               cosine_similarity(table, table).float())
    sim = cosine_similarity_matrix(table)
    assert sim.dtype == torch.float32
    assert torch.allclose(sim, torch.nn.functional.cosine_similarity(
        table[:, None].float(), table[None].float(), dim=-1), atol=1e-6)


# ----- bad input: a clear error naming the parameter ---------------------------------------------

BAD_SIZES = [
    ({"n_positions": 0}, ValueError, "n_positions"),
    ({"n_positions": -5}, ValueError, "n_positions"),
    ({"n_positions": 4.0}, TypeError, "n_positions"),
    ({"n_positions": None}, TypeError, "n_positions"),
    ({"n_positions": True}, TypeError, "n_positions"),
    ({"n_positions": 10**9}, ValueError, "more than"),
    ({"d_model": 7}, ValueError, "even"),
    ({"d_model": 0}, ValueError, "d_model"),
    ({"d_model": -8}, ValueError, "d_model"),
    ({"d_model": "8"}, TypeError, "d_model"),
    ({"d_model": 8.5}, TypeError, "d_model"),
]


@pytest.mark.parametrize("sizes, error, match", BAD_SIZES)
def test_sinusoidal_bad_sizes(sizes, error, match):
    with pytest.raises(error, match=match):
        sinusoidal(**{"n_positions": 10, "d_model": 8, **sizes})
    with pytest.raises(error, match=match):
        position_similarities(**{"n_positions": 10, "d_model": 8, **sizes})


def test_sizes_as_numpy_and_torch_ints():
    assert torch.equal(sinusoidal(np.int64(5), torch.tensor(8)), sinusoidal(5, 8))


@pytest.mark.parametrize("base, error", [(math.nan, ValueError), (math.inf, ValueError),
                                         (1.0, ValueError), (0.5, ValueError), (-2.0, ValueError),
                                         ("1e4", TypeError), (None, TypeError)])
def test_bad_rope_base(base, error):
    with pytest.raises(error, match="base"):
        rope_angles(4, 8, base)
    with pytest.raises(error, match="base"):
        rope_table(torch.ones(8), 4, base)
    with pytest.raises(error, match="base"):
        rope_pair_rotation(1, 0, 8, base)


@pytest.mark.parametrize("args, error, match", [
    ((0, 8), ValueError, "n_positions"), ((4, 7), ValueError, "head_dim must be even"),
    ((4, 0), ValueError, "head_dim"), ((4.0, 8), TypeError, "n_positions"),
])
def test_bad_rope_angles(args, error, match):
    with pytest.raises(error, match=match):
        rope_angles(*args)


@pytest.mark.parametrize("x, error, match", [
    (torch.ones(2, 4), ValueError, "x must be one vector"),
    (torch.ones(5), ValueError, "even"),
    (torch.ones(4, dtype=torch.long), TypeError, "float"),
    ([1.0, 2.0], TypeError, "float tensor"),
    (None, TypeError, "float tensor"),
])
def test_bad_rope_table_vector(x, error, match):
    with pytest.raises(error, match=match):
        rope_table(x, 3)


@pytest.mark.parametrize("args, error, match", [
    ((-1, 0, 16), ValueError, "position"), ((0, 8, 16), ValueError, "pair"),
    ((0, -1, 16), ValueError, "pair"), ((0, 0, 15), ValueError, "even"),
    ((0, 0, 0), ValueError, "d_model"), ((1.5, 0, 16), TypeError, "position"),
    ((0, 0.0, 16), TypeError, "pair"), ((0, 0, None), TypeError, "d_model"),
])
def test_bad_rope_pair_rotation(args, error, match):
    with pytest.raises(error, match=match):
        rope_pair_rotation(*args)


@pytest.mark.parametrize("call, error, match", [
    (lambda: cosine_similarity_matrix([[1.0, 2.0]]), ValueError, "table"),
    (lambda: cosine_similarity_matrix(torch.tensor([[math.nan, 1.0]])), ValueError, "NaN"),
    (lambda: diagonal_spread([[1.0]]), ValueError, "square"),
    (lambda: similarity_by_offset(torch.ones(3, 3), -1), ValueError, "position"),
    (lambda: similarity_by_offset(torch.ones(3, 3), 1.0), TypeError, "position"),
    (lambda: similarity_by_offset(torch.ones(3, 4), 0), ValueError, "square"),
    (lambda: rope_score_matrix([1.0], torch.ones(4), 3), ValueError, "same shape"),
    (lambda: position_similarities(5, 4, seed=-1), ValueError, "seed"),
    (lambda: position_similarities(5, 4, seed=2**64), ValueError, "seed"),
    (lambda: position_similarities(5, 4, seed=1.5), TypeError, "seed"),
    (lambda: position_similarities(5, 4, learned=[[1.0]]), ValueError, "learned"),
])
def test_bad_comparisons(call, error, match):
    with pytest.raises(error, match=match):
        call()
