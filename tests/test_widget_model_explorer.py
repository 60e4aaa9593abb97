import string

import numpy as np
import pytest
import torch

from course_lib.interpret import MODEL_STAGES, model_trace
from course_lib.model import GPT, GPTConfig
from course_lib.tokenization import CharTokenizer
from widgets.model_explorer import PARTS, ModelExplorer

TEXT = "ROMEO:\nsoft, a light"


@pytest.fixture
def tokenizer():
    # 97 characters, one per id of small_model's vocabulary
    return CharTokenizer.from_text(string.ascii_letters + string.digits + string.punctuation
                                   + " \n\t")


@pytest.fixture
def view(small_model, tokenizer):
    view = ModelExplorer((small_model, tokenizer), text=TEXT, k=5)
    view.forward_calls = []
    small_model.register_forward_hook(lambda *args: view.forward_calls.append(1))
    return view


def test_shows_every_stage_with_its_live_shape(view, tokenizer):
    T = len(tokenizer.encode(TEXT))
    assert view.trace.ids == tokenizer.encode(TEXT)
    labels = dict((value, label) for label, value in view.stage.options)
    assert labels["embeddings"] == f"embeddings ({T} × 32)"
    assert labels["logits"] == f"logits ({T} × 97)" and labels["next token"] == "next token (97)"
    for shape in (f"({T})", f"({T} × 32)", f"({T} × 97)"):
        assert shape in view.diagram.value
    assert "2 blocks" in view.diagram.value and "+ positions" in view.diagram.value
    assert view.model_name.layout.display == "none"  # one model: nothing to choose


def test_stage_buttons_show_that_stage(view):
    tr = view.trace
    view.stage.value = "embeddings"
    assert np.allclose(view.shown, (tr.token_embeddings + tr.position_embeddings).numpy())
    assert np.allclose(np.array(view.figure.data[0].z), view.shown, atol=5e-4)  # 3 decimals
    assert view.block_panel.layout.display == "none"
    view.stage.value = "final norm"
    assert np.allclose(view.shown, tr.final_norm.numpy())
    view.stage.value = "tokens"
    assert list(view.figure.data[1].y) == tr.ids and "<code>↵</code>" in view.detail.value
    view.stage.value = "logits"
    assert np.allclose(view.shown, np.sort(tr.logits[-1].numpy())[::-1][:5])
    view.stage.value = "next token"
    assert np.allclose(view.shown, [p for _, p in tr.top])
    assert view.figure.data[1].visible and not view.figure.data[0].visible
    assert f"<code>{tr.top[0][0]}</code>" in view.detail.value
    assert view.forward_calls == []
    assert [s for _, s in view.stage.options] == list(MODEL_STAGES)


def test_layer_part_and_head_controls(view):
    tr = view.trace
    view.stage.value = "blocks"
    assert view.block_panel.layout.display is None
    view.layer.value = 0
    assert np.allclose(view.shown, tr.residual[1].numpy())
    view.part.value = PARTS[1]
    assert np.allclose(view.shown, tr.attn_out[0].numpy())
    view.part.value = PARTS[2]
    assert np.allclose(view.shown, tr.mlp_out[0].numpy())
    view.layer.value, view.head.value = 1, 3
    assert np.allclose(view.shown, tr.mlp_out[1].numpy())
    z = np.array(view.attention_figure.data[0].z, dtype=float)
    assert np.allclose(np.nan_to_num(z), tr.attention[1, 3].numpy(), atol=5e-4)
    assert np.isnan(z[0, 1])  # the future is blank
    assert "block 1, head 3" in view.attention_figure.layout.title.text
    assert view.lens_rows == tr.lens_top[2]
    view.layer.value = 0
    assert view.lens_rows == tr.lens_top[1]
    assert list(view.lens_chart.data[1].x) == [0]  # block 0, as on the slider
    assert list(view.lens_chart.data[0].x) == [-1, 0, 1]  # -1: the embeddings
    top_id = int(tr.probs.argmax())
    assert np.allclose(view.lens_chart.data[0].y, tr.lens[:, top_id].numpy())
    assert view.forward_calls == []


def test_new_prompt_is_one_forward_pass(view, small_model, tokenizer):
    view.stage.value = "next token"
    view.text.value = "JULIET:\nah me"
    assert len(view.forward_calls) == 1
    expected = model_trace(small_model, tokenizer, tokenizer.encode("JULIET:\nah me"), k=5)
    assert view.trace.ids == expected.ids
    assert torch.allclose(view.trace.probs, expected.probs)
    assert np.allclose(view.shown, [p for _, p in expected.top])
    assert view.stage.value == "next token"  # the chosen stage stays chosen


def test_bad_prompts_show_a_message(view, tokenizer):
    before = view.trace
    view.text.value = "   "
    assert "empty" in view.message.value and view.trace is before
    view.text.value = "snow ☃ man"  # a character the tokenizer does not know
    assert "cannot be tokenized" in view.message.value and view.trace is before
    view.text.value = "x" * 40  # longer than block_size 32
    assert "last 32" in view.message.value and len(view.trace.ids) == 32
    view.text.value = "ROMEO:"
    assert "6 tokens" in view.message.value and "#b3261e" not in view.message.value


def test_choose_between_two_models(small_model, tokenizer):
    torch.manual_seed(1)
    rope = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=3, n_head=2, n_embd=16,
                         position="rope")).eval()
    view = ModelExplorer({"small": (small_model, tokenizer), "rope": (rope, tokenizer)},
                         text=TEXT)
    assert view.model_name.layout.display != "none"
    view.model_name.value = "rope"
    assert view.layer.max == 2 and view.head.max == 1
    assert view.trace.residual.shape == (4, 16, 16)  # cropped to block_size
    assert "last 16" in view.message.value
    assert view.trace.position_embeddings is None
    assert "+ positions" not in view.diagram.value
    view.stage.value = "embeddings"
    assert "rotary" in view.detail.value


def test_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="models"):
        ModelExplorer("gpt2")


def test_a_model_whose_tokenizer_fails_shows_a_message(small_model, tokenizer):
    class Picky:  # a tokenizer that knows no letters at all
        vocab_size = 97

        def encode(self, text):
            raise ValueError("no letters here")

        def decode(self, ids):
            return ""

    view = ModelExplorer({"small": (small_model, tokenizer), "picky": (small_model, Picky())},
                         text=TEXT)
    view.model_name.value = "picky"
    assert "cannot be tokenized" in view.message.value and view.trace is None
    view.layer.value = 0  # nothing to draw, and no error either
    view.model_name.value = "small"
    assert view.trace is not None and "20 tokens" in view.message.value
