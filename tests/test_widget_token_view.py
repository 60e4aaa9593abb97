"""TokenView: set the text and tokenizer from Python and check the coloured tokens follow."""

from __future__ import annotations

import pytest

from course_lib.tokenization import ENDOFTEXT, CharTokenizer
from widgets.token_view import CodePointTokenizer, TokenView, default_tokenizers, token_pieces

OURS = "Shakespeare BPE (ours)"
CL100K = "cl100k_base (GPT-4)"
CHARS = "characters"


@pytest.fixture(scope="module")
def tokenizers():
    return default_tokenizers()


@pytest.fixture
def view(tokenizers):
    return TokenView(tokenizers)


def test_default_view_shows_all_three_counts(view):
    assert view.tokenizer.options == (CHARS, OURS, CL100K)
    assert set(view.counts) == {CHARS, OURS, CL100K}
    assert view.counts[CHARS] == len(view.text.value)
    # BPE compresses: fewer tokens than characters.
    assert view.counts[CL100K] < view.counts[OURS] < view.counts[CHARS]
    assert len(view.pieces) == view.counts[CHARS]
    assert view.output.value.count("<span title=") == len(view.pieces)


@pytest.mark.parametrize("name", [OURS, CL100K])
def test_pieces_spell_the_text_and_follow_the_controls(view, tokenizers, name):
    view.tokenizer.value = name
    view.text.value = "Good night, sweet prince."
    assert b"".join(p.data for p in view.pieces) == b"Good night, sweet prince."
    assert view.ids == tokenizers[name].encode("Good night, sweet prince.")
    assert len(view.pieces) == view.counts[name]
    before = view.output.value
    view.text.value = "To be, or not to be"
    assert view.output.value != before
    assert "".join(p.text for p in view.pieces) == "To be, or not to be"


def test_switching_tokenizer_changes_the_ids(view):
    view.text.value = "Wherefore art thou Romeo?"
    view.tokenizer.value = OURS
    ours = view.ids
    view.tokenizer.value = CL100K
    assert view.ids != ours
    assert f"<u>{CL100K}" in view.summary.value


def test_html_is_escaped_and_whitespace_visible(view):
    view.tokenizer.value = CHARS
    view.text.value = "<b>hi</b> & bye\nnext\tline"
    html = view.output.value
    assert "<b>hi</b>" not in html
    assert "&lt;" in html and "&amp;" in html
    assert "\u00b7" in html and "\u21b5" in html and "\u2192" in html  # space, newline, tab
    assert html.count("<br>") >= 1 + view.text.value.count("\n")


def test_partial_characters_show_as_bytes(view):
    view.tokenizer.value = OURS
    view.text.value = "日"  # 3 UTF-8 bytes; the plays contain no Chinese, so 3 byte tokens
    assert [p.partial for p in view.pieces] == [True, True, True]
    assert [p.text for p in view.pieces] == ["\\xe6", "\\x97", "\\xa5"]
    assert "dashed" in view.output.value


def test_special_token_is_one_token(view, tokenizers):
    view.tokenizer.value = OURS
    view.text.value = f"The end.{ENDOFTEXT}Enter"
    assert tokenizers[OURS].special_tokens[ENDOFTEXT] in view.ids
    view.tokenizer.value = CL100K
    assert 100257 in view.ids


def test_show_ids_toggle(view):
    view.text.value = "hello"
    view.tokenizer.value = CL100K
    token_id = view.ids[0]
    assert f">{token_id}</span>" in view.output.value
    view.show_ids.value = False
    assert f">{token_id}</span>" not in view.output.value


def test_empty_text_and_unencodable_text_give_messages(tokenizers):
    view = TokenView({"plays' characters": CharTokenizer.from_text("abc "), **tokenizers})
    view.text.value = ""
    assert view.pieces == [] and "Type some text" in view.output.value
    view.text.value = "a b z"  # "z" is not in the character vocabulary
    assert view.pieces == []
    assert "cannot encode" in view.message.value and "&#x27;z&#x27;" in view.message.value
    view.tokenizer.value = CL100K  # the other tokenizers still count and show it
    assert view.message.value == "" and len(view.pieces) > 0


def test_long_text_is_drawn_only_in_part(tokenizers):
    view = TokenView(tokenizers, text="abc " * 100, max_shown=10)
    assert view.tokenizer.value == CHARS
    assert len(view.pieces) == 400
    assert view.output.value.count("<span title=") == 10
    assert "390 more tokens" in view.output.value


def test_token_pieces_code_points():
    pieces = token_pieces("é🙂", CodePointTokenizer())
    assert [p.id for p in pieces] == [0xE9, 0x1F642]
    assert [p.text for p in pieces] == ["é", "🙂"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one"):
        TokenView({})
    with pytest.raises(TypeError, match="encode"):
        TokenView({"x": 3})
    with pytest.raises(TypeError, match="text must be a str"):
        token_pieces(5, CodePointTokenizer())


@pytest.mark.parametrize("text", ["\ud800 lone surrogate", "\x00\x01", "a" * 30_000,
                                  "<|endoftext|>", "🙂" * 50])
def test_no_text_raises_out_of_the_view(tokenizers, text):
    view = TokenView(tokenizers, text="hello")
    view.text.value = text  # whatever a learner types or pastes: a message or tokens
    view.text.value = "hello again"
    assert view.pieces and view.message.value == ""


def test_smollm2_tokenizer_with_its_large_vocabulary(smollm2):
    _, tok = smollm2
    view = TokenView({"SmolLM2": tok}, text="Hello world")
    before = view.output.value
    text = "The café serves 12 croissants 🥐 at <|im_start|>noon"
    view.text.value = text
    assert [p.id for p in view.pieces] == tok.encode(text)
    assert b"".join(p.data for p in view.pieces) == text.encode()
    assert view.counts["SmolLM2"] == len(tok.encode(text))
    assert view.output.value != before and view.message.value == ""
