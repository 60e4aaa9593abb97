import math
import string

import pytest

from course_lib.evaluation import bits_per_char, surprisal
from widgets.surprisal_view import SurprisalView, surprisal_colour

ALPHABET = string.printable[:97]


class Chars:
    vocab_size = len(ALPHABET)

    def encode(self, text):
        bad = [c for c in text if c not in ALPHABET]
        if bad:
            raise ValueError(f"character {bad[0]!r} is not in the vocabulary")
        return [ALPHABET.index(c) for c in text]

    def decode(self, ids):
        return "".join(ALPHABET[i] for i in ids)


def test_typing_text_recolours_it(small_model):
    tok = Chars()
    view = SurprisalView(small_model, tok, text="hello there")
    assert [p for p, _ in view.rows] == list("hello there")
    assert view.rows[0][1] is None
    assert view.rows == surprisal(small_model, tok, "hello there")
    assert view.bits_per_char == pytest.approx(bits_per_char(small_model, tok, "hello there"))
    old_html = view.html.value
    view.text.value = "a different text\nwith two lines"
    assert "".join(p for p, _ in view.rows) == "a different text\nwith two lines"
    assert view.html.value != old_html and "&#8629;" in view.html.value
    assert view.message.value == ""
    # each scored token is drawn in the colour of its surprisal
    piece, bits = view.rows[3]
    assert surprisal_colour(bits, view.max_bits) in view.html.value
    assert f"{bits:.2f} bits" in view.html.value


def test_choosing_another_model_rescores(small_model):
    import copy

    import torch

    other = copy.deepcopy(small_model)
    with torch.no_grad():
        other.transformer.wte.weight.zero_()  # uniform: every token costs log2(vocab) bits
    view = SurprisalView({"random": small_model, "uniform": other}, Chars(), text="abcabc")
    first = [b for _, b in view.rows]
    view.model_name.value = "uniform"
    assert [b for _, b in view.rows] != first
    assert all(b == pytest.approx(math.log2(97)) for _, b in view.rows[1:])


def test_bad_input_is_a_message(small_model):
    view = SurprisalView(small_model, Chars(), text="fine")
    view.text.value = ""
    assert "Type some text" in view.message.value and view.rows == []
    view.text.value = "caf\u00e9"  # not in this tokenizer's vocabulary
    assert "not in the vocabulary" in view.message.value and view.bits_per_char is None
    view.text.value = "x"  # one token: nothing to predict
    assert view.rows == [("x", None)] and "One token" in view.summary.value
    view.text.value = "ab" * 2000
    assert "first 2000 characters" in view.message.value and len(view.rows) == 2000


def test_colour_scale(small_model):
    assert surprisal_colour(0, 16) == "#ffffcc"
    assert surprisal_colour(16, 16) == surprisal_colour(40, 16) == "#800026"
    assert surprisal_colour(-3, 16) == "#ffffcc"
    with pytest.raises(ValueError, match="max_bits"):
        SurprisalView(small_model, Chars(), max_bits=0)
    with pytest.raises(TypeError, match="models"):
        SurprisalView({}, Chars())


def test_shipped_model_and_any_unicode():
    from course_lib.pretrained import load_pretrained

    model, tokenizer = load_pretrained()
    text = "Caf\u00e9 \u2615 <b>na\u00efve</b> & 'quotes'"
    view = SurprisalView({"shipped": model}, tokenizer, text=text)
    assert view.message.value == "" and len(view.rows) == len(tokenizer.encode(text))
    assert view.bits_per_char == pytest.approx(bits_per_char(model, tokenizer, text))
    assert "<b>na" not in view.html.value  # the learner's text is escaped, not rendered
    assert view.model_name.layout.display == "none"  # one model: no menu


def test_tokens_holding_part_of_a_character_show_their_bytes():
    import torch

    from course_lib.model import GPT, GPTConfig
    from course_lib.tokenization import BPETokenizer

    tokenizer = BPETokenizer.train("a cafe, a cab, a car " * 20, vocab_size=260)
    assert len(tokenizer.encode("\u00e9")) == 2  # 'é' is two byte tokens here
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2,
                          n_embd=16))
    view = SurprisalView(model, tokenizer, text="a caf\u00e9")
    assert [p for p, _ in view.rows][-2:] == ["\\xc3", "\\xa9"]
    assert "\ufffd" not in view.html.value and "\\xc3" in view.html.value


@pytest.mark.parametrize("text", ["\x00", "\ud800", "a" * 5000, "ÜBER", " \n\t "])
def test_no_text_raises_out_of_the_view(small_model, text):
    view = SurprisalView(small_model, Chars(), text="hello")
    view.text.value = text  # whatever it holds, the view shows something and stays usable
    view.text.value = "hello again"
    assert view.rows and view.rows[0][0] == "h" and view.message.value == ""


@pytest.mark.parametrize("bad", [dict(max_bits=0), dict(max_bits=float("nan")),
                                 dict(max_chars=0), dict(text=None)])
def test_nonsense_constructor_arguments_are_refused(small_model, bad):
    with pytest.raises((ValueError, TypeError)):
        SurprisalView(small_model, Chars(), **bad)


def test_smollm2(smollm2):
    model, tok = smollm2
    view = SurprisalView(model, tok, text="The cat sat on the mat.")
    before = view.html.value
    text = "Paris is the capital of France."
    view.text.value = text
    assert view.rows == surprisal(model, tok, text)
    assert "".join(p for p, _ in view.rows) == text
    assert view.bits_per_char == pytest.approx(bits_per_char(model, tok, text))
    assert view.html.value != before and view.message.value == ""


def test_small_models_recolour_on_every_keystroke_big_ones_on_leaving_the_box(small_model):
    from widgets.surprisal_view import LIVE_MAX_PARAMS

    assert sum(p.numel() for p in small_model.parameters()) <= LIVE_MAX_PARAMS
    view = SurprisalView(small_model, Chars(), text="abc")
    assert view.text.continuous_update is True
    assert not any("click outside" in str(getattr(c, "value", "")) for c in view.children)
    view = SurprisalView(small_model, Chars(), text="abc", continuous_update=False)
    assert view.text.continuous_update is False
    assert any("click outside" in str(getattr(c, "value", "")) for c in view.children)
    with pytest.raises(TypeError, match="continuous_update"):
        SurprisalView(small_model, Chars(), continuous_update="yes")


def test_smollm2_is_scored_on_leaving_the_box_and_shows_split_characters(smollm2):
    from widgets.surprisal_view import LIVE_MAX_PARAMS

    model, tok = smollm2
    assert sum(p.numel() for p in model.parameters()) > LIVE_MAX_PARAMS
    text = "Caf\u00e9 au lait \u2615, 2025: $58 million."
    view = SurprisalView({"SmolLM2": model}, tok, text=text)
    assert view.text.continuous_update is False  # a pass takes seconds: not on every key
    # SmolLM2 spells numbers digit by digit and the cup in three byte tokens, shown as bytes
    pieces = [p for p, _ in view.rows]
    assert pieces[6:9] == [" \\xe2", "\\x98", "\\x95"] and pieces[10:15] == [" ", *"2025"]
    assert [b for _, b in view.rows] == [b for _, b in surprisal(model, tok, text)]
    assert view.bits_per_char == pytest.approx(bits_per_char(model, tok, text))
    assert "\ufffd" not in view.html.value and view.message.value == ""
