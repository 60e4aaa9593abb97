import string

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from course_lib.interpret import attention_maps, next_token_probs_with_heads
from course_lib.pretrained import MODEL_FILE, load_pretrained
from course_lib.tokenization import CharTokenizer
from widgets.head_explorer import HeadExplorer

TEXT = "ROMEO:\nsoft, a light\n\nJULIET:\nah"  # 32 characters: small_model's block_size


@pytest.fixture
def view(small_model):
    # 97 characters, one per id of small_model's vocabulary
    tokenizer = CharTokenizer.from_text(string.ascii_letters + string.digits
                                        + string.punctuation + " \n\t")
    assert tokenizer.vocab_size == small_model.config.vocab_size
    view = HeadExplorer(small_model, tokenizer, text=TEXT)
    view.forward_calls = []
    small_model.register_forward_hook(lambda *args: view.forward_calls.append(1))
    return view


def test_shows_every_heads_attention_for_the_text(view):
    ids = view.tokenizer.encode(TEXT)
    assert view.ids == ids and len(view.labels) == len(ids)
    assert view.labels[6] == "↵" and view.labels[12] == "·"
    assert torch.allclose(view.maps, attention_maps(view.model, ids))
    assert view.token.value == len(ids) - 1  # the last token, whose next token is predicted
    z = np.array(view.heatmap.data[0].z, dtype=float)
    assert np.allclose(np.nan_to_num(z), view.maps[0, 0].numpy(), atol=5e-4)  # 3 decimals
    assert np.isnan(z[0, 1]) and not np.isnan(z[1, 0])  # the future is blank, not zero
    # a long text labels every n-th token, so that the labels do not overlap
    ticks = list(view.heatmap.layout.xaxis.tickvals)
    assert len(ticks) <= 24 and ticks[0] == 0
    assert list(view.heatmap.layout.xaxis.ticktext) == [view.labels[i] for i in ticks]


def test_sliders_pick_the_head_without_a_forward_pass(view):
    view.layer.value, view.head.value = 1, 2
    z = np.nan_to_num(np.array(view.heatmap.data[0].z, dtype=float))
    assert np.allclose(z, view.maps[1, 2].numpy(), atol=5e-4)
    assert "layer 1, head 2" in view.heatmap.layout.title.text
    assert view.forward_calls == []


def test_token_dropdown_shows_where_that_token_looks(view):
    view.layer.value, view.head.value = 1, 3
    view.token.value = 7
    assert np.allclose(view.row, view.maps[1, 3, 7, :8].numpy())
    assert np.allclose(view.row_chart.data[0].y, view.row)
    assert view.row.sum() == pytest.approx(1.0, abs=1e-5)
    assert view.heatmap.layout.shapes[0].y0 == 6.5  # the chosen row is outlined
    view.token.value = 2
    assert len(view.row_chart.data[0].y) == 3
    assert view.forward_calls == []


def test_grid_tiles_every_head_and_a_click_selects_one(view):
    T = len(view.ids)
    view.tabs.selected_index = 1
    z = np.array(view.grid.data[0].z, dtype=float)
    assert z.shape == (2 * T + 1, 4 * T + 3)  # 2 layers x 4 heads, one blank cell between
    assert np.allclose(z[T + 1 :, 3 * (T + 1) :] / 100, view.maps[1, 3].numpy(), atol=5e-3)
    view.select_head_at(x=2 * (T + 1) + 3, y=T + 4)
    assert (view.layer.value, view.head.value, view.tabs.selected_index) == (1, 2, 0)
    assert view.grid.layout.shapes[0].x0 == 2 * (T + 1) - 0.5
    view.select_head_at(x=T, y=0)  # the blank cell right of a map belongs to that map
    assert (view.layer.value, view.head.value) == (0, 0)
    view.select_head_at(x=99 * T, y=0)  # outside the grid: nothing changes
    assert (view.layer.value, view.head.value) == (0, 0)


def test_grid_shows_only_the_last_tokens_of_a_long_text(small_model, view):
    short = HeadExplorer(small_model, view.tokenizer, text=TEXT, grid_tokens=10)
    short.tabs.selected_index = view.tabs.selected_index = 1
    z = np.array(short.grid.data[0].z, dtype=float)
    assert z.shape == (2 * 11 - 1, 4 * 11 - 1)
    assert np.allclose(z[11:, 33:] / 100, short.maps[1, 3, -10:, -10:].numpy(), atol=5e-3)
    assert "last 10 tokens" in short.grid.layout.title.text
    short.select_head_at(x=2 * 11 + 3, y=12)
    assert (short.layer.value, short.head.value) == (1, 2)
    assert "last" not in view.grid.layout.title.text


def test_the_grid_is_drawn_when_its_tab_is_shown_and_follows_the_text(view):
    # Its tens of thousands of cells are the heaviest part of the view: not sent until seen.
    # A hidden tab's content is not even placed in the tab, so the browser does not draw it.
    assert [len(tab.children) for tab in view.tabs.children[1:]] == [0, 0]
    assert np.array(view.grid.data[0].z).size == 1 and not view.grid.layout.shapes
    view.text.value = "JULIET:\nah"  # a new text while the grid is hidden: still not drawn
    assert np.array(view.grid.data[0].z).size == 1
    view.tabs.selected_index = 1
    assert view.tabs.children[1].children == (view.grid,)
    view.tabs.selected_index = 2
    assert view.prob_chart in view.tabs.children[2].children
    view.tabs.selected_index = 1
    T = len(view.ids)
    assert T == 10 and np.array(view.grid.data[0].z).shape == (2 * T + 1, 4 * T + 3)
    assert view.grid.layout.title.text.startswith("every head")
    assert view.grid.layout.shapes[0].x0 == -0.5  # the chosen head, outlined
    view.text.value = TEXT  # the grid in view: drawn at once
    z = np.array(view.grid.data[0].z, dtype=float)
    T = len(view.ids)
    assert np.allclose(z[T + 1 :, 3 * (T + 1) :] / 100, view.maps[1, 3].numpy(), atol=5e-3)
    assert view.forward_calls == [1, 1]  # one pass per text, none for showing the tab


def test_switching_a_head_off_changes_the_prediction(view):
    assert view.kl == 0.0 and torch.equal(view.probs_off, view.probs)
    assert [a for _, _, a in view.top] == [b for _, b, _ in view.top]
    view.switches[1][2].value = False
    assert view.forward_calls == [1]  # one pass per switch
    mask = torch.ones(2, 4)
    mask[1, 2] = 0
    assert torch.equal(view.head_mask, mask)
    expected = next_token_probs_with_heads(view.model, view.ids, mask)
    assert torch.allclose(view.probs_off, expected)
    assert view.kl > 0
    assert np.allclose(view.prob_chart.data[1].y, [a for _, _, a in view.top])
    assert np.allclose(view.prob_chart.data[0].y, [b for _, b, _ in view.top])
    assert "1 of 8 heads off" in view.kl_label.value
    assert view.switches[1][2].button_style == "danger"


def test_all_heads_off_then_reset(view):
    for row in view.switches:
        for switch in row:
            switch.value = False
    assert view.head_mask.sum() == 0
    assert "8 of 8 heads off" in view.kl_label.value
    view.forward_calls.clear()
    view.all_on.click()
    assert view.forward_calls == []  # all on is the full model, already known
    assert view.head_mask.sum() == 8 and view.kl == 0.0
    assert torch.equal(view.probs_off, view.probs)


def test_new_text_keeps_switched_off_heads(view):
    view.switches[0][0].value = False
    view.text.value = "JULIET:\nwhat"
    assert view.ids == view.tokenizer.encode("JULIET:\nwhat")
    assert view.maps.shape[-1] == len(view.ids)
    assert view.token.value == len(view.ids) - 1
    assert view.head_mask[0, 0] == 0 and view.kl > 0


def test_bad_text_shows_a_message_not_a_traceback(view):
    shown = view.maps.clone()
    view.text.value = "   "
    assert "at least one token" in view.message.value
    assert torch.equal(view.maps, shown)  # the last good text stays on screen
    view.text.value = "héllo"  # é is not in the character vocabulary
    assert "cannot be tokenized" in view.message.value
    view.text.value = "abc " * 20  # 80 characters, block_size is 32
    assert "only the last 32" in view.message.value and len(view.ids) == 32
    view.text.value = "abc"
    assert "3 tokens" in view.message.value


@pytest.mark.skipif(not MODEL_FILE.exists(), reason="the shipped model is not exported yet")
def test_runs_on_the_shipped_model():
    model, tokenizer = load_pretrained()
    view = HeadExplorer(model, tokenizer)
    assert view.maps.shape[:2] == (model.config.n_layer, model.config.n_head)
    assert view.top[0][1] == pytest.approx(view.probs.max().item())
    view.switches[0][0].value = False
    assert view.kl > 0


def test_figures_are_widgets_that_start_with_the_data(view):
    for figure in (view.heatmap, view.row_chart, view.grid, view.prob_chart):
        assert isinstance(figure, go.FigureWidget)
    # the state a browser first receives already holds the maps, not a placeholder
    first = np.array(view.heatmap._widget_data[0]["z"], dtype=float)
    assert np.allclose(np.nan_to_num(first), view.maps[0, 0].numpy(), atol=5e-4)


def test_an_empty_starting_text_waits_for_one(small_model):
    tokenizer = CharTokenizer.from_text(string.ascii_letters + string.digits
                                        + string.punctuation + " \n\t")
    view = HeadExplorer(small_model, tokenizer, text="")
    assert "at least one token" in view.message.value and view.ids == []
    view.layer.value, view.head.value = 1, 2  # nothing to show yet, and no error
    view.switches[0][1].value = False
    view.all_on.click()
    view.select_head_at(0, 0)
    view.text.value = "abc"
    assert view.ids == tokenizer.encode("abc") and view.maps.shape[-1] == 3


def test_the_grid_sends_click_events(view):
    # plotly sends no click event for a trace whose hoverinfo is "skip"
    assert view.grid.data[0].hoverinfo != "skip"
    view.tabs.selected_index = 1
    view.layer.value, view.head.value = 0, 0
    step = view._grid_T + view._gap
    view.select_head_at(1 * step + 1, 1 * step + 1)
    assert (view.layer.value, view.head.value, view.tabs.selected_index) == (1, 1, 0)


def test_smollm2_every_head_of_30_layers(smollm2):
    from course_lib.interpret import attention_and_probs

    model, tok = smollm2
    text = "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat."
    view = HeadExplorer(model, tok, text=text)
    assert (view.layer.max, view.head.max) == (29, 8)
    maps, _ = attention_and_probs(model, tok.encode(text))
    view.layer.value, view.head.value = 20, 8
    z = np.nan_to_num(np.array(view.heatmap.data[0].z, dtype=float))
    assert np.allclose(z, maps[20, 8].numpy(), atol=5e-4)
    # 270 heads: the grid keeps to about 100,000 cells by showing the last tokens only.
    view.tabs.selected_index = 1
    T = view._grid_T
    assert T < len(view.ids)
    grid = np.array(view.grid.data[0].z)
    assert grid.shape == (30 * (T + 1) - 1, 9 * (T + 1) - 1) and grid.size <= 100_000
    assert f"last {T} tokens" in view.grid.layout.title.text
    view.select_head_at(x=3 * (T + 1) + 1, y=7 * (T + 1) + 1)
    assert (view.layer.value, view.head.value) == (7, 3)


def test_switches_share_one_layout_and_one_style(view):
    # Each Layout or style is a widget of its own: one message to the browser apiece.
    switches = [s for row in view.switches for s in row]
    assert len({id(s.layout) for s in switches}) == 1 and len({id(s.style) for s in switches}) == 1
    switches[1].value = False  # still switches one head, not all
    assert view.head_mask.flatten().tolist().count(0.0) == 1
