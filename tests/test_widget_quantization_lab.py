import pytest

from course_lib.evaluation import bits_per_char
from course_lib.quantize import fake_quantize, model_nbytes, quantize_model
from widgets.quantization_lab import QuantizationLab

TEXT = "hello there, general kenobi; you are a bold one. " * 3


class Chars:
    def encode(self, text):
        return [ord(c) - 32 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 32) for i in ids)


def test_moving_bits_and_group_size_changes_what_is_shown(small_model):
    tok = Chars()
    lab = QuantizationLab(small_model, tok, TEXT, bits=8, group_size=None,
                          matrix="transformer.h.0.mlp.c_fc.weight")
    w = small_model.transformer.h[0].mlp.c_fc.weight
    errors = list(lab.figure.data[0].x)
    assert errors == pytest.approx((fake_quantize(w, 8) - w).reshape(-1).tolist(), abs=1e-7)
    assert lab.summary["bits_per_char"] == pytest.approx(
        bits_per_char(quantize_model(small_model, 8), tok, TEXT))
    int8 = dict(lab.summary)
    lab.bits.value = 3
    assert lab.summary["rms_error"] > 5 * int8["rms_error"]
    assert lab.summary["nbytes"] < int8["nbytes"]
    assert "int3" in lab.table.value
    lab.group_size.value = 16
    assert lab.summary["bits_per_weight"] == 3 + 16 / 16
    lab.bits.value = 9  # float32
    assert lab.summary["rms_error"] == 0
    assert lab.summary["nbytes"] == model_nbytes(small_model)
    assert lab.summary["bits_per_char"] == pytest.approx(bits_per_char(small_model, tok, TEXT))
    before = list(lab.figure.data[0].x)
    lab.bits.value = 4
    lab.matrix.value = "transformer.wte.weight"  # tied to the output layer
    assert list(lab.figure.data[0].x) != before and len(lab.figure.data[0].x) == w.shape[1] * 97


def test_a_group_size_that_does_not_fit_is_a_message(small_model):
    lab = QuantizationLab(small_model, Chars(), TEXT, bits=4, group_size=16)
    shown = dict(lab.summary)
    lab.group_size.value = 64  # rows of the 32-wide model are shorter than a group
    assert "must divide" in lab.message.value and lab.summary == shown
    lab.group_size.value = 32
    assert lab.message.value == ""


def test_shipped_model():
    from course_lib.data import load_corpus
    from course_lib.pretrained import load_pretrained

    model, tokenizer = load_pretrained()
    lab = QuantizationLab(model, tokenizer, load_corpus("val")[:2000])
    assert lab.matrix.value == "transformer.h.0.attn.c_attn.weight"
    assert lab.summary["bits_per_char"] > lab._float["bits_per_char"]
    assert lab._float["nbytes"] > 6 * lab.summary["nbytes"]


def test_the_figure_does_not_ship_plotly_js(small_model):
    from widgets.figure import FigureWidget

    lab = QuantizationLab(small_model, Chars(), TEXT, bits=8, group_size=None,
                          matrix="transformer.h.0.mlp.c_fc.weight")
    assert isinstance(lab.figure, FigureWidget)
    # plotly's own FigureWidget sends its 5 MB bundle as the front end; ours sends a stub
    assert len(lab.figure._esm) < 5000
