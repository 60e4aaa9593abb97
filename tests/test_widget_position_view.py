import math

import numpy as np
import pytest
import torch

from course_lib.positional import apply_rope, sinusoidal
from widgets.position_view import PositionView


@pytest.fixture
def view():
    torch.manual_seed(0)
    return PositionView(torch.randn(40, 16))


def test_sizes_come_from_the_learned_table(view):
    assert (view.n_positions, view.d_model) == (40, 16)
    assert view.position.max == 39 and view.dimension.max == 15
    assert set(view.similarity) == {"sinusoidal", "learned", "rotary"}
    assert set(PositionView(n_positions=10, d_model=8).similarity) == {"sinusoidal", "rotary"}


def test_dimension_slider_changes_the_wave(view):
    view.dimension.value = 0
    before = view.wave.copy()
    view.dimension.value = 5
    assert not np.allclose(before, view.wave)
    assert np.allclose(view.wave, sinusoidal(40, 16)[:, 5].numpy())
    assert np.allclose(view.wave_figure.data[0].y, view.wave)


def test_position_slider_moves_the_marker_and_the_offsets(view):
    view.position.value = 7
    assert list(view.wave_figure.data[1].x) == [7]
    assert view.wave_figure.data[1].y[0] == pytest.approx(view.wave[7])
    offsets, values = view.similarity["sinusoidal"]
    assert offsets[0] == -7 and values[7] == pytest.approx(1.0, abs=1e-5)
    view.position.value = 30
    offsets, _ = view.similarity["learned"]
    assert offsets[0] == -30
    assert list(view.similarity_figure.data[0].x) == list(offsets)


def test_sinusoidal_and_rotary_curves_keep_their_shape_learned_does_not(view):
    view.position.value = 10
    first = {k: dict(zip(*v, strict=True)) for k, v in view.similarity.items()}
    view.position.value = 20
    second = {k: dict(zip(*v, strict=True)) for k, v in view.similarity.items()}
    shared = [o for o in first["rotary"] if o in second["rotary"]]
    for kind in ("sinusoidal", "rotary"):
        assert max(abs(first[kind][o] - second[kind][o]) for o in shared) < 1e-4
    assert max(abs(first["learned"][o] - second["learned"][o]) for o in shared) > 0.05


def test_rotation_follows_the_position_and_equals_apply_rope(view):
    view.dimension.value = 3  # pair 1: dims 2 and 3
    view.position.value = 0
    assert view.rotated == pytest.approx((1.0, 0.0))
    view.position.value = 9
    assert view.angle == pytest.approx(9 * 10000 ** (-2 / 16))
    x = torch.zeros(1, 10, 16)
    x[..., 2] = 1.0
    assert view.rotated == pytest.approx(tuple(apply_rope(x)[0, 9, 2:4].tolist()), abs=1e-5)
    assert view.rotation_figure.data[2].x[1] == pytest.approx(math.cos(view.angle))
    title = view.rotation_figure.layout.title.text
    view.position.value = 10
    assert view.rotation_figure.layout.title.text != title


def test_the_wave_is_drawn_continuously_through_the_positions():
    view = PositionView(n_positions=64, d_model=16)
    view.dimension.value = 1  # the fastest cosine: 1 radian per position
    fine = view.wave_figure.data[2]
    assert len(fine.x) == 8 * 63 + 1
    whole = np.asarray(fine.x[::8])
    assert np.allclose(whole, np.arange(64))
    assert np.allclose(np.asarray(fine.y)[::8], view.wave, atol=1e-6)  # through every marker


@pytest.mark.parametrize("bad", [dict(n_positions=1), dict(d_model=7), dict(d_model=0),
                                 dict(n_positions=2.5), dict(learned="table")])
def test_nonsense_constructor_arguments_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        PositionView(**bad)
