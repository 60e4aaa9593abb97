import string

import numpy as np
import pytest

from course_lib.interpret import attention_maps
from course_lib.tokenization import CharTokenizer
from widgets.attention_view import AttentionView


@pytest.fixture
def view(small_model):
    tokenizer = CharTokenizer.from_text(string.ascii_lowercase + " .,")
    view = AttentionView(small_model, tokenizer, text="the cat sat", max_tokens=20)
    view.forward_calls = []
    small_model.register_forward_hook(lambda *args: view.forward_calls.append(1))
    return view


def test_shows_the_models_attention_for_the_text(view):
    assert view.tokens == list("the·cat·sat")
    ids = view.tokenizer.encode("the cat sat")
    expected = attention_maps(view.model, ids)[0, 0].numpy()
    assert np.allclose(view.weights, expected)
    shown = np.array(view.figure.data[0].z, dtype=float)
    assert np.allclose(np.tril(shown), np.tril(expected))
    assert np.isnan(shown[np.triu_indices(len(view.tokens), k=1)]).all()  # masked: blank, grey
    assert list(view.figure.layout.xaxis.ticktext) == view.tokens
    assert np.allclose(view.weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(view.weights, k=1) == 0)  # causal: nothing to the right


def test_layer_and_head_sliders_change_the_map_without_a_forward_pass(view):
    first = view.weights.copy()
    view.head.value = 3
    after_head = view.weights.copy()
    view.layer.value = 1
    assert not np.allclose(first, after_head)
    assert not np.allclose(after_head, view.weights)
    assert view.figure.layout.title.text.startswith("layer 1, head 3")
    assert view.forward_calls == []


def test_new_text_runs_one_forward_pass(view):
    view.text.value = "a dog"
    assert view.tokens == list("a·dog") and view.weights.shape == (5, 5)
    assert len(view.forward_calls) == 1
    assert len(view.figure.data[0].customdata) == 5
    assert view.message.value == ""


def test_empty_text_gets_a_message_and_clears_the_map(view):
    view.text.value = "   "
    assert "empty" in view.message.value
    # the last sentence's map must not stay up as if it were this text's
    assert view.weights.size == 0 and view.tokens == []
    assert list(map(list, view.figure.data[0].z)) == [[None]]
    assert "no text" in view.figure.layout.title.text
    view.text.value = "ok"
    assert view.message.value == "" and view.weights.shape == (2, 2)


def test_long_text_is_cut_to_its_last_tokens_with_a_note(view):
    view.text.value = "abcdefghij" * 3
    assert len(view.tokens) == 20 and view.tokens[-1] == "j"
    assert "30 tokens" in view.message.value and "last 20" in view.message.value


def test_text_the_tokenizer_rejects_gets_a_message(view):
    view.text.value = "ÜBER"
    assert "cannot be tokenized" in view.message.value
    assert view.tokens == [] and view.weights.size == 0



def test_shipped_model_and_its_tokenizer():
    from course_lib.pretrained import MODEL_FILE, load_pretrained

    if not MODEL_FILE.exists():
        pytest.skip("the shipped model is not in course_lib/assets")
    model, tokenizer = load_pretrained()
    text = "ROMEO:\nBut soft, what light through yonder window breaks?"
    view = AttentionView(model, tokenizer, text)
    ids = tokenizer.encode(text)
    assert len(view.tokens) == len(ids) and "↵" in "".join(view.tokens)
    assert "".join(view.tokens).replace("·", " ").replace("↵", "\n") == text
    assert view.weights.shape == (len(ids), len(ids))
    view.layer.value, view.head.value = model.config.n_layer - 1, model.config.n_head - 1
    assert np.allclose(view.weights, attention_maps(model, ids)[-1, -1].numpy())
    view.text.value = "and " * 60
    assert len(view.tokens) == view.max_tokens and "last 40" in view.message.value
