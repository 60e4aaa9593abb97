import numpy as np
import pytest
import torch

from course_lib.pretrained import load_translator
from course_lib.seq2seq import cross_attention_weights
from course_lib.translation import cross_attention_map, make_batch
from widgets.cross_attention_view import CrossAttentionView


@pytest.fixture(scope="module")
def translator():
    return load_translator()


@pytest.fixture
def view(translator):
    model, tokenizer = translator
    view = CrossAttentionView(model, tokenizer, text="ninety-seven")
    view.forward_calls = []
    hook = model.register_forward_pre_hook(lambda *args: view.forward_calls.append(1))
    model.encoder.register_forward_hook(lambda *args: view.forward_calls.append(1))
    yield view
    hook.remove()
    model.encoder._forward_hooks.clear()


def test_weights_match_the_decoder_and_rows_sum_to_one(translator):
    model, tokenizer = translator
    src, src_mask, tgt, _ = make_batch(tokenizer, [("ninety-seven", "quatre-vingt-dix-sept"),
                                                   ("two", "deux")])
    weights, logits = cross_attention_weights(model, src, tgt, src_mask)
    assert weights.shape == (2, 2, 4, tgt.shape[1], src.shape[1])
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert (weights[:, 1, :, :, 3:] == 0).all()  # "two" is 3 characters: padding gets nothing
    with torch.no_grad():
        expected = model.decode(tgt, model.encode(src, src_mask), src_mask)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_the_view_shows_the_translation_and_its_map(view):
    assert view.source_tokens == list("ninety-seven")
    assert "".join(view.written[:-1]) == "quatre-vingt-dix-sept" and view.written[-1] == "<eos>"
    assert view.weights.shape == (len(view.written), 12)
    assert np.allclose(view.weights.sum(-1), 1.0, atol=1e-5)
    assert "quatre-vingt-dix-sept" in view.translation.value
    shown = np.array(view.figure.data[0].z, dtype=float)
    assert np.allclose(shown, view.weights)
    assert view.step.max == len(view.written) - 1
    found = cross_attention_map(view.model, view.tokenizer, "ninety-seven")
    assert np.allclose(view.weights, found["weights"][view.layer.value, 0].numpy())


def test_sliders_change_what_is_drawn_without_a_forward_pass(view):
    first = view.weights.copy()
    view.head.value = 2
    assert not np.allclose(first, view.weights)
    second = view.weights.copy()
    view.layer.value = 0
    assert not np.allclose(second, view.weights)
    view.step.value = 5
    rect = view.figure.layout.shapes[0]
    assert (rect.y0, rect.y1) == (4.5, 5.5)
    assert "step 5: writing 'e'" in view.figure.layout.title.text  # quatr[e]
    assert view.forward_calls == []


def test_new_text_translates_once(view):
    view.step.value = 20
    view.text.value = "seven"
    assert "".join(view.written) == "sept<eos>" and view.step.max == 4 and view.step.value == 4
    assert len(view.forward_calls) == 2  # the greedy translation, then the map
    assert view.message.value == ""


@pytest.mark.parametrize("text", ["   ", "ninety-seven!", "x" * 200])
def test_bad_text_shows_a_message_not_a_traceback(view, text):
    view.text.value = text
    assert view.message.value and "Traceback" not in view.message.value
    assert view.weights.size == 0 and list(map(list, view.figure.data[0].z)) == [[None]]
    view.text.value = "seven"
    assert view.message.value == "" and view.weights.shape == (5, 5)
