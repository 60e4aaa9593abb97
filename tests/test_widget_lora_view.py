import copy

import pytest

from course_lib.lora import add_lora, trainable_parameters
from widgets.lora_view import LoRAView


def test_counts_follow_rank_and_targets_and_match_add_lora(small_model):
    view = LoRAView(small_model, rank=4, targets=("attn.c_attn",))
    # small_model: 2 blocks, n_embd 32, so c_attn is 32 -> 96
    assert view.max_rank == 32 and view.ranks[-1] == 32
    assert view.trainable == 2 * 4 * (32 + 96)
    assert view.full_count == 2 * 32 * 96
    assert view.figure.data[2].x == (4,) and view.figure.data[2].y == (view.trainable,)

    view.rank.value = 8
    assert view.trainable == 2 * 8 * (32 + 96)
    assert view.figure.data[2].x == (8,)
    assert view.percent == pytest.approx(100 * view.trainable / small_model.num_parameters())
    assert view.figure.data[5].y == (view.percent,)
    assert "rank 8" in view.summary.value or "r = 8" in view.summary.value

    before = view.trainable
    view.checkboxes["mlp.c_fc"].value = True
    assert view.targets == ("attn.c_attn", "mlp.c_fc")
    assert view.trainable == before + 2 * 8 * (32 + 128)
    assert view.figure.data[0].y[-1] == view.counts[-1] == 32 * view.counts[0]
    # the view's count is what add_lora really trains
    adapted = add_lora(copy.deepcopy(small_model), rank=8, targets=view.targets)
    assert trainable_parameters(adapted)[0] == view.trainable


def test_break_even_where_lora_matches_the_full_matrix(small_model):
    view = LoRAView(small_model, rank=16, targets=("attn.c_proj",))  # square, 32 x 32
    assert view.trainable == view.full_count  # r (d + d) = d * d at r = d / 2
    assert "16.0" in view.summary.value
    view.rank.value = 17
    assert view.trainable > view.full_count and "more" in view.summary.value


def test_no_target_shows_a_message_not_a_traceback(small_model):
    view = LoRAView(small_model)
    view.checkboxes["attn.c_attn"].value = False
    assert view.targets == () and view.trainable == 0
    assert "Tick at least one" in view.summary.value
    assert view.figure.data[0].y == () and view.figure.data[2].x == ()
    view.rank.value = 3  # moving the slider with nothing ticked is fine too
    view.checkboxes["mlp.c_fc"].value = True
    assert view.trainable == 2 * 3 * (32 + 128)


def test_a_model_with_lora_already_counts_the_same(small_model):
    plain = LoRAView(small_model, rank=2)
    add_lora(small_model, rank=4)
    wrapped = LoRAView(small_model, rank=2)
    assert wrapped.counts == plain.counts and wrapped.model_total == plain.model_total


def test_bad_targets(small_model):
    with pytest.raises(ValueError, match="choose from"):
        LoRAView(small_model, targets=("c_nope",))



def test_nothing_ticked_hides_the_figure_and_says_why(small_model):
    view = LoRAView(small_model, rank=4, targets=("attn.c_attn",))
    view.checkboxes["attn.c_attn"].value = False
    assert view.targets == () and view.trainable == 0
    assert view.figure_box.layout.display == "none" and "Tick at least one" in view.summary.value
    view.checkboxes["mlp.c_fc"].value = True
    assert view.figure_box.layout.display is None and view.trainable > 0


@pytest.mark.parametrize("bad", [dict(rank=0), dict(rank=10**6), dict(rank=2.5),
                                 dict(targets=("no.such.layer",))])
def test_nonsense_constructor_arguments_are_refused(small_model, bad):
    with pytest.raises((ValueError, TypeError)):
        LoRAView(small_model, **bad)
    with pytest.raises(TypeError):
        LoRAView("a model")


def test_percent_axis_labels_every_tick_with_its_unit(small_model):
    axis = LoRAView(small_model, rank=4).figure.layout.yaxis2
    assert axis.type == "log" and axis.ticksuffix == " %" and axis.showticksuffix == "all"
