"""The model explorer's computation and the logit lens (course_lib.interpret, last section)."""

import string

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from course_lib.interpret import (
    MODEL_STAGES,
    attention_maps,
    logit_lens,
    model_trace,
    parameter_counts,
)
from course_lib.model import GPT, GPTConfig
from course_lib.tokenization import CharTokenizer


@pytest.fixture
def tokenizer():
    # 97 characters, one per id of small_model's vocabulary
    return CharTokenizer.from_text(string.ascii_letters + string.digits + string.punctuation
                                   + " \n\t")


@pytest.fixture
def hf_pair():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=61, n_positions=24, n_embd=32, n_layer=3, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(config).eval()
    return hf, GPT.from_hf_gpt2(hf).eval()


def test_trace_adds_up_to_the_models_logits(small_model, tokenizer):
    ids = tokenizer.encode("ROMEO:\nsoft, a light")
    tr = model_trace(small_model, tokenizer, ids, k=3)
    T, C = len(ids), 32
    assert tr.ids == ids and tr.labels[6] == "↵"
    assert tr.residual.shape == (3, T, C) and tr.attn_out.shape == tr.mlp_out.shape == (2, T, C)
    # the stream starts as token plus position, and each block adds its attention and its MLP
    assert torch.allclose(tr.residual[0], tr.token_embeddings + tr.position_embeddings)
    assert torch.equal(tr.token_embeddings, small_model.transformer.wte.weight[ids])
    for layer in range(2):
        step = tr.residual[layer] + tr.attn_out[layer] + tr.mlp_out[layer]
        assert torch.allclose(tr.residual[layer + 1], step, atol=1e-6)
    logits = small_model(torch.tensor([ids]))[0][0]
    assert torch.allclose(tr.logits, logits, atol=1e-6)
    assert torch.allclose(small_model.lm_head(tr.final_norm), logits, atol=1e-6)
    assert torch.allclose(tr.attention, attention_maps(small_model, ids))
    assert torch.allclose(tr.probs, torch.softmax(logits[-1], -1))
    assert tr.shapes == {"tokens": (T,), "embeddings": (T, C), "blocks": (T, C),
                         "final norm": (T, C), "logits": (T, 97), "next token": (97,)}
    assert tuple(tr.shapes) == MODEL_STAGES


def test_trace_top_tokens_and_lens(small_model, tokenizer):
    ids = tokenizer.encode("to be or not")
    tr = model_trace(small_model, tokenizer, ids, k=4)
    assert tr.lens.shape == (3, 97)
    assert torch.allclose(tr.lens[-1], tr.probs, atol=1e-6)  # the last layer is the output
    best = torch.topk(tr.probs, 4)
    assert [p for _, p in tr.top] == pytest.approx(best.values.tolist())
    assert [t for t, _ in tr.top] == [tokenizer.decode([i]).replace(" ", "·")
                                      for i in best.indices.tolist()]
    assert len(tr.lens_top) == 3 and all(len(row) == 4 for row in tr.lens_top)
    assert [t for t, _ in tr.lens_top[-1]] == [t for t, _ in tr.top]
    assert [p for _, p in tr.lens_top[-1]] == pytest.approx([p for _, p in tr.top])
    assert tr.lens_top[0][0][1] == pytest.approx(tr.lens[0].max().item())


def test_logit_lens_equals_transformers_hidden_states(hf_pair):
    hf, ours = hf_pair
    ids = torch.tensor([[5, 17, 3, 42, 8, 60, 1]])
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
    lens = logit_lens(ours, ids[0])
    assert lens.shape == (4, 61)
    # HF's hidden_states[i] is the stream before block i (its last one is after the final norm)
    for layer in range(3):
        expected = torch.softmax(hf.lm_head(hf.transformer.ln_f(out.hidden_states[layer][0, -1])),
                                 -1)
        assert torch.allclose(lens[layer], expected, atol=1e-5)
    assert torch.allclose(lens[-1], torch.softmax(out.logits[0, -1], -1), atol=1e-5)
    at_two = logit_lens(ours, ids, position=2)
    assert torch.allclose(at_two[-1], torch.softmax(out.logits[0, 2], -1), atol=1e-5)
    # causal: the first position's lens does not depend on the tokens after it
    assert torch.allclose(logit_lens(ours, ids, position=-7), logit_lens(ours, ids[:, :1]),
                          atol=1e-6)


def test_trace_and_lens_leave_the_model_as_it_was(small_model, tokenizer):
    small_model.train()
    model_trace(small_model, tokenizer, [1, 2, 3])
    logit_lens(small_model, [1, 2, 3])
    assert small_model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in small_model.modules())


def test_bad_input_gets_a_clear_error(small_model, tokenizer):
    with pytest.raises(ValueError, match="position"):
        logit_lens(small_model, [1, 2, 3], position=3)
    with pytest.raises(TypeError, match="position"):
        logit_lens(small_model, [1, 2, 3], position=1.5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        logit_lens(small_model, [1, 200])
    with pytest.raises(TypeError, match="integer"):
        model_trace(small_model, tokenizer, [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        model_trace(small_model, tokenizer, [])
    with pytest.raises(ValueError, match="one sequence"):
        model_trace(small_model, tokenizer, [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="k must be"):
        model_trace(small_model, tokenizer, [1, 2], k=0)


def test_long_input_keeps_the_last_block_size_tokens(small_model, tokenizer):
    ids = list(range(40))
    tr = model_trace(small_model, tokenizer, ids)
    assert tr.ids == ids[-32:] and tr.residual.shape[1] == 32


def test_parameter_counts_by_component(small_model):
    counts = parameter_counts(small_model)
    C, V, L = 32, 97, 2
    assert counts == {"embeddings": V * C, "positions": 32 * C,
                      "attention": L * (4 * C * C + 4 * C), "mlp": L * (8 * C * C + 5 * C),
                      "norms": L * 4 * C + 2 * C, "head": 0}
    assert sum(counts.values()) == small_model.num_parameters()


def test_gpt2_small_counts_equal_transformers():
    # Built on the meta device: shapes only, no memory and nothing downloaded.
    with torch.device("meta"):
        ours = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12,
                             n_embd=768))
        hf_tied = GPT2LMHeadModel(GPT2Config())
        hf_untied = GPT2LMHeadModel(GPT2Config(tie_word_embeddings=False))
    total = sum(parameter_counts(ours).values())
    assert total == sum(p.numel() for p in hf_tied.parameters()) == 124_439_808
    untied = sum(p.numel() for p in hf_untied.parameters())
    assert untied == 163_037_184 == total + 50257 * 768


# ----- SmolLM2, the real model (fixtures in conftest.py; transformers reads the same GGUF) ------


def test_smollm2_lens_equals_transformers_and_paris_rises(smollm2, smollm2_hf):
    model, tokenizer = smollm2
    ids = tokenizer.encode("The capital of France is")
    lens = logit_lens(model, ids)
    n_layer = model.config.n_layer
    assert lens.shape == (n_layer + 1, model.config.vocab_size)
    with torch.no_grad():
        out = smollm2_hf(torch.tensor([ids]), output_hidden_states=True)
        states = torch.stack([h[0, -1] for h in out.hidden_states[:-1]])
        theirs = torch.softmax(smollm2_hf.lm_head(smollm2_hf.model.norm(states)), -1)
    assert torch.allclose(lens[:-1], theirs, atol=1e-4)
    assert torch.allclose(lens[-1], torch.softmax(out.logits[0, -1], -1), atol=1e-4)
    (paris,) = tokenizer.encode(" Paris")
    assert int(lens[-1].argmax()) == paris and lens[-1, paris] > 0.5
    assert lens[: n_layer // 2, paris].max() < 0.01  # the first half of the stack has no idea


def test_smollm2_trace_shapes_and_counts(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer.encode("The capital of France is")
    tr = model_trace(model, tokenizer, ids, k=3)
    T, C, V = len(ids), 576, 49152
    assert tr.shapes == {"tokens": (T,), "embeddings": (T, C), "blocks": (T, C),
                         "final norm": (T, C), "logits": (T, V), "next token": (V,)}
    assert tr.position_embeddings is None  # rotary: positions act inside attention
    assert tr.attention.shape == (30, 9, T, T)
    assert tr.top[0][0] == "·Paris"
    counts = parameter_counts(model)
    assert sum(counts.values()) == model.num_parameters() == 134_515_008
    assert counts["positions"] == counts["head"] == 0
