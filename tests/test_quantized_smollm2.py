"""load_smollm2(quantized=True): the file's 4-bit blocks on torch's int4 kernel, against float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from course_lib.chat import chat, encode_chat
from course_lib.engine import Engine
from course_lib.gguf_file import read_gguf
from course_lib.int4_linear import (
    GROUP,
    Int4Embedding,
    Int4Head,
    Int4Linear,
    pack_int4,
    q4_1_parts,
    unpack_int4,
)
from course_lib.quantize import dequantize_q4_1, model_nbytes
from course_lib.sampling import SamplingParams, generate

# A fixed English paragraph, not from any lesson, for the agreement of the two models.
PARAGRAPH = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "developed a system of movable metal type in the German city of Mainz. His invention made "
    "books far cheaper to produce, and within a few decades printing shops had spread to most of "
    "the major cities of Europe. Scholars could now share their work quickly and accurately, "
    "which helped to drive the scientific revolution and the spread of new ideas about religion "
    "and government. Before the press, every book had to be copied by hand, usually by monks "
    "working in quiet rooms for months at a time, and a single mistake could be repeated in "
    "every copy made from it. Printing changed not only how many books there were but who could "
    "read them: as prices fell, merchants, craftsmen and eventually ordinary families bought "
    "almanacs, pamphlets and newspapers. Literacy rose, national languages became more uniform, "
    "and governments learned that the written word could be a powerful tool and a dangerous one."
)


@pytest.fixture(scope="module")
def smollm2_q4(smollm2_file):
    from course_lib.pretrained import load_smollm2

    return load_smollm2(quantized=True)


@pytest.fixture(scope="module")
def gguf(smollm2_file):
    return read_gguf(smollm2_file)


def _reference(gguf, name: str) -> torch.Tensor:
    """gguf's own (llama.cpp's reference) dequantization of a tensor of the file."""
    t = gguf.tensors[name]
    w = dequantize(gguf.raw(name), GGMLQuantizationType(t.type_id))
    return torch.from_numpy(np.asarray(w, dtype=np.float32)).reshape(t.shape)


def test_packing_equals_torchs_own_op():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (192, 576), generator=g, dtype=torch.int32)
    ours = pack_int4(codes.to(torch.uint8))
    theirs = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    assert torch.equal(ours, theirs)
    assert torch.equal(unpack_int4(ours), codes.to(torch.uint8))
    with pytest.raises(ValueError, match="multiples of 64"):
        pack_int4(codes[:100].to(torch.uint8))


def test_q4_1_codes_are_the_files_blocks(gguf):
    raw = gguf.raw("blk.0.attn_k.weight")
    codes, d, m = q4_1_parts(raw)
    w = (codes.float().view(192, -1, GROUP) * d.float()[..., None] + m.float()[..., None])
    assert torch.equal(w.view(192, 576), _reference(gguf, "blk.0.attn_k.weight"))
    assert torch.equal(w.view(192, 576), torch.from_numpy(dequantize_q4_1(raw)))


@pytest.mark.parametrize("name", ["blk.0.attn_k.weight", "blk.5.ffn_down.weight",
                                  "token_embd.weight"])
def test_kernel_matmul_equals_the_dequantized_matrix_within_bf16_rounding(gguf, name):
    """Q4_1 (scale d, zero m + 8 d) and Q8_0 (two planes) in the kernel's form: its weights are
    the file's but for the scales' rounding to bfloat16, and its products equal x W^T of the
    file's matrix within bfloat16 rounding of x, the scales and the output."""
    t = gguf.tensors[name]
    layer = Int4Linear.from_blocks(gguf.raw(name), t.type_name)
    exact = _reference(gguf, name)
    assert layer.weight.shape == exact.shape == (layer.out_features, layer.in_features)
    eps = 2.0**-8  # bfloat16's relative rounding (8 bits of mantissa, round to nearest)
    blocks = exact.abs().view(exact.shape[0], -1, GROUP).amax(-1, keepdim=True)
    bound = (4 * eps * blocks).expand(-1, -1, GROUP).reshape(exact.shape)  # a few scale roundings
    assert ((layer.weight - exact).abs() <= bound).all()
    assert (layer.weight - exact).abs().max() > 0  # the scales really are rounded
    x = torch.randn(5, exact.shape[1], generator=torch.Generator().manual_seed(1))
    y, ref = layer(x), x @ exact.T
    scale = x.abs() @ exact.abs().T
    assert ((y - ref).abs() <= 6 * eps * scale + 1e-6).all()
    assert (y - ref).abs().max() > 0  # not a float32 product in disguise
    assert y.dtype == torch.float32 and y.shape == (5, exact.shape[0])


def test_quantized_model_keeps_the_files_blocks(smollm2_q4, smollm2):
    q, _ = smollm2_q4
    f, _ = smollm2
    linears = [m for m in q.modules() if isinstance(m, Int4Linear)]
    assert len(linears) == 4 * q.config.n_layer + 1  # qkv, out, gate-up, down; and the head
    assert isinstance(q.lm_head, Int4Head) and isinstance(q.transformer.wte, Int4Embedding)
    assert q.transformer.wte.head is q.lm_head  # one copy of the tied matrix
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    # 4.5 bits a weight for Q4_1 in the kernel's form, against float32's 32: about 1/5 in all
    assert model_nbytes(q) < 0.25 * model_nbytes(f)
    assert torch.equal(q.transformer.ln_f.weight, f.transformer.ln_f.weight)
    assert torch.equal(q.transformer.h[3].ln_1.weight, f.transformer.h[3].ln_1.weight)
    ids = torch.tensor([[1, 500, 9000]])
    assert torch.equal(q.transformer.wte(ids), f.transformer.wte(ids))  # the lookup is exact
    assert torch.equal(q.lm_head.rows(torch.tensor([7, 49151])), f.lm_head.weight[[7, 49151]])
    assert q.device == torch.device("cpu")


def test_agreement_with_float32_on_an_english_paragraph(smollm2_q4, smollm2):
    q, tok = smollm2_q4
    f, _ = smollm2
    ids = torch.tensor([tok.encode(PARAGRAPH)])
    assert ids.shape[1] > 150
    with torch.no_grad():
        lf, loss_f = f(ids[:, :-1], ids[:, 1:])
        lq, loss_q = q(ids[:, :-1], ids[:, 1:])
    agreement = (lf.argmax(-1) == lq.argmax(-1)).float().mean().item()
    assert agreement >= 0.97
    assert abs(loss_q.item() - loss_f.item()) <= 0.02 * loss_f.item()
    assert 0 < (lq - lf).abs().max() < 2.0  # bfloat16 inside: the logits differ, but little


def test_the_head_without_its_exact_top_logits_swaps_near_ties(smollm2_q4, smollm2):
    """Why Int4Head recomputes the candidates: the kernel's bfloat16 logits are further off
    than the gap between the two best candidates at some position of the paragraph, so alone
    they could pick another token than float32 from the same hidden states."""
    q, tok = smollm2_q4
    f, _ = smollm2
    ids = torch.tensor([tok.encode(PARAGRAPH)])
    hidden = {}
    hook = f.transformer.ln_f.register_forward_hook(lambda m, i, o: hidden.setdefault("h", o))
    try:
        with torch.no_grad():
            lf, _ = f(ids)
    finally:
        hook.remove()
    with torch.no_grad():
        plain = Int4Linear.forward(q.lm_head, hidden["h"])
        refined = q.lm_head(hidden["h"])
    best_two = lf.topk(2, dim=-1).values
    assert (plain - lf).abs().max() > (best_two[..., 0] - best_two[..., 1]).min()
    assert torch.equal(refined.argmax(-1), lf.argmax(-1))
    top = lf.argmax(-1, keepdim=True)  # the winners' logits are float32's, to rounding
    assert torch.allclose(refined.gather(-1, top), lf.gather(-1, top), atol=1e-4)


LESSON_CHATS = [  # lesson 13's greedy questions (the one-word ones with its system prompt)
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer with exactly one word."},
     {"role": "user", "content": "What is the capital of Italy?"}],
    [{"role": "system", "content": "Answer with exactly one word."},
     {"role": "user", "content": "What color is grass?"}],
    [{"role": "system", "content": "Answer with exactly one word."},
     {"role": "user", "content": "What is the opposite of hot?"}],
]


NEAR_TIE = 0.05  # logits; float32's own best two closer than this are a coin toss for any change


@pytest.mark.parametrize("messages", LESSON_CHATS, ids=lambda m: m[-1]["content"])
def test_lesson_chat_answers_are_unchanged_but_at_near_ties(smollm2_q4, smollm2, messages):
    """Greedy answers equal float32's, or part from them only where float32's two best tokens
    are within NEAR_TIE of each other (of logits near 30): there bfloat16 arithmetic, like any
    change of summation order, may pick either. Which prompts do part is printed."""
    q, tok = smollm2_q4
    f, _ = smollm2
    ids = encode_chat(tok, messages)
    ours, theirs = generate(q, ids, 16, temperature=0), generate(f, ids, 16, temperature=0)
    parted = (ours != theirs)[0].nonzero()
    if len(parted):
        at = int(parted[0])
        with torch.no_grad():
            best_two = f(theirs[:, :at])[0][0, -1].topk(2).values
        gap = float(best_two[0] - best_two[1])
        print(f"{messages[-1]['content']!r}: parts at token {at - len(ids)}, float32's best two "
              f"{gap:.3f} apart: {tok.decode(ours[0, len(ids):].tolist())!r} against "
              f"{tok.decode(theirs[0, len(ids):].tolist())!r}")
        assert gap < NEAR_TIE


def test_most_lesson_answers_are_exactly_float32s(smollm2_q4, smollm2):
    q, tok = smollm2_q4
    f, _ = smollm2
    for messages in (LESSON_CHATS[0], LESSON_CHATS[3]):  # France; the opposite of hot
        ids = encode_chat(tok, messages)
        assert torch.equal(generate(q, ids, 16, temperature=0),
                           generate(f, ids, 16, temperature=0))


def _same_or_near_tie(model, prompt: list[int], a: list[int], b: list[int]) -> bool:
    """a == b, or they part where model's own two best tokens are nearly tied.

    The quantized model rounds activations to bfloat16 inside every product, so two paths to
    the same logits (the KV cache or not, the engine's paged batch or generate alone) differ by
    a few bfloat16 roundings, which decide a near-tie either way (e.g. "Water boils at 100" then
    "0" or "°", 0.06 apart). Where nothing is nearly tied they agree token for token.
    """
    if a == b:
        return True
    at = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    with torch.no_grad():
        best_two = model(torch.tensor([prompt + a[:at]]))[0][0, -1].topk(2).values
    return float(best_two[0] - best_two[1]) < 2 * NEAR_TIE


def test_lesson_9_continuation_and_cache_paths(smollm2_q4, smollm2):
    q, tok = smollm2_q4
    f, _ = smollm2
    ids = tok.encode("The capital of France is")
    cached = generate(q, ids, 32, temperature=0)
    assert torch.equal(cached, generate(f, ids, 32, temperature=0))
    assert torch.equal(cached, generate(q, ids, 32, temperature=0, use_cache=False))


def test_chat_and_engine_run_on_it(smollm2_q4):
    q, tok = smollm2_q4
    reply = chat(q, tok, [{"role": "user", "content": "What is the capital of France?"}],
                 max_new_tokens=12)
    assert "Paris" in reply
    prompts = [tok.encode("The capital of France is"), tok.encode("Water boils at"),
               tok.encode("def fibonacci(n):")]
    params = SamplingParams(temperature=0, max_new_tokens=10)
    done = Engine(q, max_batch_size=3).run(prompts, params)
    exact = 0
    for out, p in zip(done, prompts, strict=True):
        alone = generate(q, p, 10, temperature=0)[0, len(p):].tolist()
        assert _same_or_near_tie(q, p, out, alone)
        exact += out == alone
    assert exact >= 2


def test_dequantized_weight_gives_the_same_logits_as_a_float_linear(smollm2_q4):
    q, _ = smollm2_q4
    layer = q.transformer.h[0].mlp.c_proj
    x = torch.randn(2, 3, layer.in_features, generator=torch.Generator().manual_seed(2))
    y = layer(x)
    ref = F.linear(x, layer.weight)
    assert y.shape == ref.shape == (2, 3, layer.out_features)
    assert torch.allclose(y, ref, rtol=0.02, atol=0.02 * ref.abs().max().item())


@pytest.mark.parametrize("kwargs, match", [
    (dict(quantized="yes"), "quantized"),
    (dict(quantized=True, dtype=torch.bfloat16), "float32"),
    (dict(quantized=True, device="meta"), "device"),
])
def test_bad_quantized_arguments(smollm2_file, kwargs, match):
    from course_lib.pretrained import load_smollm2

    with pytest.raises((ValueError, TypeError), match=match):
        load_smollm2(**kwargs)


def test_model_explorer_and_logit_lens_run_on_it(smollm2_q4, smollm2):
    from course_lib.interpret import logit_lens, model_trace
    from widgets.model_explorer import ModelExplorer

    q, tok = smollm2_q4
    f, _ = smollm2
    ids = tok.encode("The capital of France is")
    lens_q, lens_f = logit_lens(q, ids), logit_lens(f, ids)
    assert lens_q.shape == lens_f.shape
    assert torch.equal(lens_q[-1].argmax(-1), lens_f[-1].argmax(-1))  # " Paris" at the top
    trace = model_trace(q, tok, ids, k=3)
    assert trace.token_embeddings.shape == (len(ids), q.config.n_embd)
    view = ModelExplorer((q, tok), text="The capital of France is", k=3)
    assert view is not None


def test_matvec_limits_time_the_bytes_each_format_reads(smollm2_q4, smollm2):
    from course_lib.bench_smollm2 import matvec_limits

    f32, _ = smollm2
    q4, _ = smollm2_q4
    limits = matvec_limits(f32, q4, repeats=1)
    n = sum(m.weight.numel() for m in f32.modules() if isinstance(m, torch.nn.Linear))
    assert {k: v["bytes"] for k, v in limits.items()} == {
        "float32, bytes read alone": 4 * n, "float32, F.linear": 4 * n, "float32": 4 * n,
        "bfloat16": 2 * n, "int8, bf16 activations": n + 2 * sum(
            m.weight.shape[0] for m in f32.modules() if isinstance(m, torch.nn.Linear)),
        "int4 (the file's blocks)": sum(b.numel() * b.element_size()
                                        for b in q4.buffers())}
    assert all(v["ms"] > 0 for v in limits.values())
