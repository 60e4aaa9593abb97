import pytest
import torch

from course_lib.sampling import (
    SamplingParams,
    apply_temperature,
    beam_search,
    describe_filtering,
    entropy_bits,
    generate,
    generate_text,
    next_token_logits,
    next_token_probs,
    repeated_ngram_fraction,
    stream_generate,
    top_k_filter,
    top_p_filter,
)
from course_lib.tokenization import CharTokenizer


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(4, 50) * 3


def test_filters_match_transformers_logits_processors(logits):
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    ids = torch.zeros(4, 1, dtype=torch.long)
    for t in (0.3, 1.0, 2.5):
        assert torch.allclose(apply_temperature(logits, t), TemperatureLogitsWarper(t)(ids, logits))
    for k in (1, 5, 50, 80):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits.clone()))
    for p in (0.05, 0.3, 0.9, 1.0):
        assert torch.equal(top_p_filter(logits, p), TopPLogitsWarper(p)(ids, logits.clone()))


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.75))
    assert kept.tolist() == [True, True, False, False]
    kept = torch.isfinite(top_p_filter(probs.log(), 0.01))
    assert kept.tolist() == [True, False, False, False]  # the top token always stays


def test_temperature_zero_is_greedy(logits):
    probs = torch.softmax(apply_temperature(logits, 0), -1)
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))
    assert torch.allclose(probs.max(-1).values, torch.ones(4))


def test_entropy_bits():
    assert entropy_bits(torch.full((8,), 1 / 8)).item() == pytest.approx(3.0)
    assert entropy_bits(torch.tensor([1.0, 0.0])).item() == 0.0


def test_generate_returns_prompt_then_new_tokens(small_model):
    out = generate(small_model, [5, 6, 7], 10, temperature=0)
    assert out.shape == (1, 13) and out[0, :3].tolist() == [5, 6, 7]


@pytest.mark.parametrize("n_new", [20, 60])  # 60 runs past block_size=32: the window slides
def test_cached_equals_uncached(small_model, n_new):
    prompt = torch.randint(0, 97, (2, 5))
    greedy = generate(small_model, prompt, n_new, temperature=0)
    assert torch.equal(greedy, generate(small_model, prompt, n_new, temperature=0,
                                        use_cache=False))
    sampled = generate(small_model, prompt, n_new, temperature=1.0, top_k=20, seed=3)
    assert torch.equal(sampled, generate(small_model, prompt, n_new, temperature=1.0, top_k=20,
                                         seed=3, use_cache=False))


def test_seed_makes_sampling_reproducible(small_model):
    a = generate(small_model, [1], 30, seed=7)
    assert torch.equal(a, generate(small_model, [1], 30, seed=7))
    assert not torch.equal(a, generate(small_model, [1], 30, seed=8))


def test_stream_yields_the_same_tokens(small_model):
    streamed = [t.item() for t in stream_generate(small_model, [3, 4], 12, seed=1)]
    assert streamed == generate(small_model, [3, 4], 12, seed=1)[0, 2:].tolist()


def test_next_token_probs_with_top_k(small_model):
    probs = next_token_probs(small_model, [1, 2, 3], temperature=1.0, top_k=5)
    assert (probs[0] > 0).sum().item() == 5
    assert probs.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=10**12), "max_new_tokens"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**64), "seed"),
        (dict(stop_ids=[97]), "stop_ids"),
        (dict(stop_ids=[]), "stop_ids"),
    ],
)
def test_bad_sampling_arguments(small_model, kwargs, match):
    args = dict(max_new_tokens=3) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(small_model, [1, 2], **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_new_tokens=2.0), "max_new_tokens"),
        (dict(seed=1.5), "seed"),
        (dict(stop_ids=[1.5]), "stop_ids"),
        (dict(stop_ids="x"), "stop_ids"),
    ],
)
def test_badly_typed_sampling_arguments(small_model, kwargs, match):
    args = dict(max_new_tokens=3) | kwargs
    with pytest.raises(TypeError, match=match):
        generate(small_model, [1, 2], **args)
    with pytest.raises(TypeError, match="model"):
        generate("gpt", [1, 2], 3)


def test_generation_stops_when_every_sequence_has_produced_a_stop_id(small_model):
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    free = generate(small_model, prompt, 20, seed=0)
    # A stop id each row produces at some step, the second row later than the first.
    row0, row1 = free[0, 3:].tolist(), free[1, 3:].tolist()
    stop = next(t for t in row0 if t in row1 and row1.index(t) > row0.index(t))
    out = generate(small_model, prompt, 20, seed=0, stop_ids=[stop])
    end0, end1 = row0.index(stop), row1.index(stop)
    assert out.shape[1] == 3 + end1 + 1  # ends with the later row's stop token, included
    assert out[1, 3:].tolist() == row1[: end1 + 1]
    # The row that stopped first repeats its stop token from there on, as padding.
    assert out[0, 3:].tolist() == row0[: end0 + 1] + [stop] * (end1 - end0)
    assert torch.equal(generate(small_model, prompt, 20, seed=0, stop_ids=stop), out)
    # Stop ids that never come change nothing.
    assert torch.equal(generate(small_model, prompt, 20, seed=0, stop_ids={0, 96}
                                if 0 not in free[:, 3:] and 96 not in free[:, 3:] else None),
                       free)


def test_bad_prompts(small_model):
    with pytest.raises(ValueError, match="empty"):
        generate(small_model, [], 3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(small_model, [1, 500], 3)
    with pytest.raises(TypeError, match="top_k"):
        generate(small_model, [1], 3, top_k=2.5)


class _ByteTokenizer:
    """Tokens are runs of bytes: id b < 256 is the byte b; larger ids are the pairs in `pairs`."""

    def __init__(self, pairs: list[bytes]):
        self.table = [bytes([b]) for b in range(256)] + pairs

    def decode_bytes(self, ids):
        return b"".join(self.table[i] for i in ids)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


TEXTS = ["naïve 🙂", "日本語のテキスト", "a🙂b🙂🙂c", "plain ascii", "é" * 7]


@pytest.mark.parametrize("text", TEXTS)
def test_utf8_pieces_never_yield_a_broken_character(text):
    import random

    from course_lib.sampling import utf8_pieces

    data = text.encode("utf-8")
    # The pairs cut across characters: the bytes of one token can end mid-character.
    tok = _ByteTokenizer([data[i : i + 2] for i in range(len(data) - 1)])
    naive = "".join(tok.decode([b]) for b in data)
    assert text == "plain ascii" or "\ufffd" in naive  # what a per-token decode shows
    rng = random.Random(0)
    for _ in range(200):  # random splits of the bytes into one- and two-byte tokens
        ids, i = [], 0
        while i < len(data):
            if i + 1 < len(data) and rng.random() < 0.5:
                ids.append(256 + i)
                i += 2
            else:
                ids.append(data[i])
                i += 1
        pieces = list(utf8_pieces(tok, ids))
        assert "".join(pieces) == text and all(pieces)
        assert "\ufffd" not in "".join(pieces)


def test_utf8_pieces_are_always_a_prefix_even_for_invalid_bytes():
    import random

    from course_lib.sampling import utf8_pieces

    tok = _ByteTokenizer([])
    rng = random.Random(1)
    for _ in range(300):
        data = bytes(rng.choice([0x41, 0xC3, 0xA9, 0xF0, 0x9F, 0x99, 0x82, 0xFF, 0x80])
                     for _ in range(rng.randint(1, 12)))
        final = tok.decode(list(data))
        text = ""
        for piece in utf8_pieces(tok, list(data)):
            text += piece
            assert final.startswith(text)
        assert text == final
    assert "".join(utf8_pieces(tok, [0x61, 0x62, 0x0A, 0x63], stop_ids=[0x0A])) == "ab"


def test_stream_text_is_the_decoded_generation(small_model):
    from course_lib.sampling import stream_text

    tok = _ByteTokenizer([b"\xc3\xaf", b"\xf0\x9f"])  # 97 ids in all: the model's vocabulary
    tok.table = tok.table[:95] + tok.table[256:]
    out = generate(small_model, [1, 2, 3], 30, seed=3)[0, 3:].tolist()
    pieces = list(stream_text(small_model, tok, [1, 2, 3], 30, seed=3))
    assert "".join(pieces) == tok.decode(out) and all(pieces)
    stop = out[10]
    stopped = "".join(stream_text(small_model, tok, [1, 2, 3], 30, seed=3, stop_ids=[stop]))
    assert stopped == tok.decode(out[: out.index(stop)])
    with pytest.raises(ValueError, match="one sequence"):
        list(stream_text(small_model, tok, [[1, 2], [3, 4]], 5))


# ----- penalties, min-p, stop strings, beam search (issue 14) --------------------------------


def _random_gpt2(seed: int, vocab: int = 61):
    """A random small transformers GPT-2 with sharp distributions, and our copy of it."""
    import transformers

    from course_lib.model import GPT

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2,
                                  n_head=4, eos_token_id=None, bos_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(20)  # sharper distributions, so beams really differ from greedy
    return hf, GPT.from_hf_gpt2(hf).eval()


def _unpadded(prompt: torch.Tensor) -> dict:
    """transformers' generate reads pad_token_id in a prompt as padding unless told otherwise."""
    return {"pad_token_id": 0, "attention_mask": torch.ones_like(prompt)}


def test_penalties_and_min_p_equal_transformers_processors_bit_for_bit():
    from transformers import MinPLogitsWarper, RepetitionPenaltyLogitsProcessor

    from course_lib.sampling import min_p_filter, repetition_penalty

    torch.manual_seed(0)
    for _ in range(5):
        x = torch.randn(3, 50) * 4
        ids = torch.randint(0, 50, (3, 12))  # repeats included: a token counts once
        for penalty in (0.5, 1.0, 1.3, 2.0):
            ref = RepetitionPenaltyLogitsProcessor(penalty)(ids, x.clone())
            assert torch.equal(repetition_penalty(x, ids, penalty), ref)
        for p in (0.0, 0.02, 0.1, 0.5, 1.0):
            assert torch.equal(min_p_filter(x, p), MinPLogitsWarper(p)(ids, x.clone()))
    # one row of logits with its ids as a flat list
    assert torch.equal(repetition_penalty(x[0], ids[0].tolist(), 1.3),
                       RepetitionPenaltyLogitsProcessor(1.3)(ids[:1], x[:1].clone())[0])


def test_presence_and_frequency_penalties_follow_openais_formula():
    from collections import Counter

    from course_lib.sampling import presence_frequency_penalty

    torch.manual_seed(1)
    x = torch.randn(2, 30)
    ids = torch.randint(0, 30, (2, 25))
    got = presence_frequency_penalty(x, ids, presence=0.7, frequency=0.3)
    for row in range(2):
        counts = Counter(ids[row].tolist())
        for j in range(30):
            c = counts.get(j, 0)
            want = x[row, j].item() - 0.3 * c - 0.7 * (c > 0)
            assert got[row, j].item() == pytest.approx(want, abs=1e-6)
    assert torch.equal(presence_frequency_penalty(x, ids), x)


def _transformers_chain(repetition_penalty, temperature, top_k, top_p, min_p):
    """transformers' processors in the order it applies them, as filter_logits should."""
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    return LogitsProcessorList([RepetitionPenaltyLogitsProcessor(repetition_penalty),
                                TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k),
                                TopPLogitsWarper(top_p), MinPLogitsWarper(min_p)])


def test_filter_logits_applies_processors_in_transformers_order():
    from course_lib.sampling import filter_logits

    torch.manual_seed(2)
    x = torch.randn(4, 80) * 3
    ids = torch.randint(0, 80, (4, 10))
    ref = _transformers_chain(1.5, 0.7, 20, 0.9, 0.05)(ids, x.clone())
    chain = SamplingParams(temperature=0.7, top_k=20, top_p=0.9)
    got = filter_logits(x, chain, min_p=0.05, repetition_penalty=1.5, context=ids)
    assert torch.allclose(got, ref) and torch.equal(torch.isinf(got), torch.isinf(ref))
    # defaults leave filter_logits as it was
    assert torch.equal(filter_logits(x, chain), filter_logits(x, chain, min_p=None))
    with pytest.raises(ValueError, match="context"):
        filter_logits(x, repetition_penalty=1.2)


def test_greedy_generation_with_repetition_penalty_equals_transformers():
    hf, ours = _random_gpt2(0)
    prompt = torch.tensor([[3, 7, 7, 11, 5]])
    for penalty in (1.0, 1.5, 3.0):
        ref = hf.generate(prompt, do_sample=False, max_new_tokens=20, repetition_penalty=penalty,
                          **_unpadded(prompt))
        assert torch.equal(generate(ours, prompt, 20, temperature=0,
                                    repetition_penalty=penalty), ref)
    plain = generate(ours, prompt, 20, temperature=0)
    assert not torch.equal(plain, generate(ours, prompt, 20, temperature=0, repetition_penalty=3.0))
    # penalties that change nothing leave the tokens as they were
    assert torch.equal(generate(ours, prompt, 20, seed=0),
                       generate(ours, prompt, 20, seed=0, repetition_penalty=1.0,
                                presence_penalty=0.0, min_p=0.0))


def test_penalties_reduce_repetition_in_sampling(small_model):
    from course_lib.sampling import repeated_ngram_fraction

    plain = generate(small_model, [1, 2, 3], 200, temperature=0)[0, 3:]
    penalised = generate(small_model, [1, 2, 3], 200, temperature=0, frequency_penalty=2.0)[0, 3:]
    assert repeated_ngram_fraction(penalised, 2) < repeated_ngram_fraction(plain, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_equals_transformers_on_a_random_gpt2(seed):
    from course_lib.sampling import beam_search

    hf, ours = _random_gpt2(seed)
    prompt = torch.randint(0, 61, (1, 5), generator=torch.Generator().manual_seed(seed))
    for num_beams in (1, 2, 3, 5):
        for length_penalty, penalty in ((1.0, None), (0.5, None), (2.0, 1.3)):
            ref = hf.generate(prompt, num_beams=num_beams, do_sample=False, max_new_tokens=12,
                              **_unpadded(prompt), length_penalty=length_penalty,
                              repetition_penalty=penalty)
            got = beam_search(ours, prompt, num_beams, 12, length_penalty=length_penalty,
                              repetition_penalty=penalty)
            assert torch.equal(got, ref), (num_beams, length_penalty, penalty)
            plain = beam_search(ours, prompt, num_beams, 12, length_penalty=length_penalty,
                                repetition_penalty=penalty, use_cache=False)
            assert torch.equal(plain, got)
    for eos in (int(prompt[0, 0]), prompt[0, :2].tolist()):  # one stop id, two
        ref = hf.generate(prompt, num_beams=3, do_sample=False, max_new_tokens=12,
                          **_unpadded(prompt), eos_token_id=eos)
        assert torch.equal(beam_search(ours, prompt, 3, 12, stop_ids=eos), ref)


def test_beam_search_past_the_context_window_matches_the_plain_path():
    from course_lib.model import GPT, GPTConfig
    from course_lib.sampling import beam_search

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5)
    out = beam_search(model, [1, 2, 3], 3, 12)
    assert out.shape == (1, 15)
    assert torch.equal(out, beam_search(model, [1, 2, 3], 3, 12, use_cache=False))


def test_kv_cache_reorder_equals_a_cache_built_from_reordered_rows(small_model):
    x = torch.randint(0, 97, (3, 6))
    order = torch.tensor([2, 0, 0, 1])
    cache = small_model.new_cache()
    small_model(x, kv_cache=cache)
    cache.reorder(order)
    ref = small_model.new_cache()
    small_model(x[order], kv_cache=ref)
    for a, b in zip(cache.keys + cache.values, ref.keys + ref.values, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    nxt = torch.randint(0, 97, (4, 1))
    assert torch.allclose(small_model(nxt, kv_cache=cache)[0], small_model(nxt, kv_cache=ref)[0],
                          atol=1e-5)
    with pytest.raises(ValueError, match="row numbers"):
        cache.reorder([0, 4])
    with pytest.raises(ValueError, match="empty"):
        small_model.new_cache().reorder([0])


def test_smollm2_beam_search_and_stop_strings_equal_transformers(smollm2, smollm2_hf,
                                                                   smollm2_hf_tokenizer):
    from course_lib.sampling import beam_search, generate_text, stream_text

    model, tok = smollm2
    ids = tok.encode("The capital of France is")
    prompt = torch.tensor([ids])
    ref = smollm2_hf.generate(prompt, num_beams=4, do_sample=False, max_new_tokens=16,
                              eos_token_id=None, **_unpadded(prompt))
    got = beam_search(model, prompt, 4, 16)
    assert torch.equal(got, ref)
    greedy = generate(model, prompt, 16, temperature=0)
    assert not torch.equal(got, greedy)  # beams find a different, likelier continuation
    for stop in (".", ["\n", "France"]):
        ref = smollm2_hf.generate(prompt, do_sample=False, max_new_tokens=30, **_unpadded(prompt),
                                  stop_strings=stop, tokenizer=smollm2_hf_tokenizer)
        want = tok.decode(ref[0, len(ids):].tolist())
        text = generate_text(model, tok, "The capital of France is", 30, temperature=0, stop=stop)
        assert text == want
        assert any(s in text for s in ([stop] if isinstance(stop, str) else stop))
        assert "".join(stream_text(model, tok, ids, 30, temperature=0, stop=stop)) == text


def test_bad_decoding_arguments(small_model):
    from course_lib.sampling import beam_search, generate_text, min_p_filter, repetition_penalty

    x = torch.randn(2, 97)
    with pytest.raises(ValueError, match="min_p"):
        generate(small_model, [1, 2], 3, min_p=1.5)
    with pytest.raises(ValueError, match="repetition_penalty"):
        generate(small_model, [1, 2], 3, repetition_penalty=0)
    with pytest.raises(TypeError, match="presence_penalty"):
        generate(small_model, [1, 2], 3, presence_penalty="high")
    with pytest.raises(ValueError, match="min_p"):
        min_p_filter(x, -0.1)
    with pytest.raises(ValueError, match="vocabulary"):
        repetition_penalty(x, torch.tensor([[1], [200]]), 1.2)
    with pytest.raises(ValueError, match="batch"):
        repetition_penalty(x, torch.tensor([[1, 2]]), 1.2)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(small_model, [1, 2], 0, 5)
    with pytest.raises(ValueError, match="one sequence"):
        beam_search(small_model, [[1, 2], [3, 4]], 2, 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        beam_search(small_model, [1, 2], 2, 0)
    with pytest.raises(TypeError, match="length_penalty"):
        beam_search(small_model, [1, 2], 2, 3, length_penalty=None)
    tok = _ByteTokenizer([])
    tok.encode = lambda s: [1]
    with pytest.raises(ValueError, match="empty string"):
        generate_text(small_model, tok, "a", 3, stop="")
    with pytest.raises(TypeError, match="strings"):
        generate_text(small_model, tok, "a", 3, stop=[3])


# The helpers lessons 8 and 9 use: logits, filtering summaries, repeats, text.
@pytest.fixture
def logits_1d():
    torch.manual_seed(0)
    return torch.randn(50) * 3


def test_next_token_logits_match_next_token_probs(small_model):
    ids = [1, 5, 9, 2]
    logits = next_token_logits(small_model, ids)
    assert logits.shape == (97,)
    assert torch.allclose(torch.softmax(logits, -1), next_token_probs(small_model, ids)[0])


def test_next_token_logits_crops_long_prompts_and_rejects_batches(small_model):
    long = list(range(40))  # block_size is 32
    assert torch.allclose(next_token_logits(small_model, long), next_token_logits(small_model,
                                                                                  long[-32:]))
    with pytest.raises(ValueError, match="one sequence"):
        next_token_logits(small_model, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        next_token_logits(small_model, [])


def test_describe_filtering_without_filters_changes_nothing(logits_1d):
    d = describe_filtering(logits_1d, n=10)
    assert d["before"] == pytest.approx(d["after"])
    assert d["kept"] == 50
    assert d["entropy_before"] == pytest.approx(d["entropy_after"])
    assert d["before"] == sorted(d["before"], reverse=True)
    assert d["ids"][0] == int(logits_1d.argmax())
    assert d["cumulative"][-1] < 1.0 and d["cumulative"] == sorted(d["cumulative"])


def test_describe_filtering_temperature(logits_1d):
    cold = describe_filtering(logits_1d, temperature=0.05)
    hot = describe_filtering(logits_1d, temperature=3.0)
    assert cold["after"][0] > 0.99
    assert cold["entropy_after"] < 0.1 < hot["entropy_before"] < hot["entropy_after"]
    greedy = describe_filtering(logits_1d, temperature=0)
    assert greedy["kept"] == 1 and greedy["after"][0] == 1.0 and greedy["entropy_after"] == 0


def test_describe_filtering_top_k_and_top_p(logits_1d):
    d = describe_filtering(logits_1d, top_k=5)
    assert d["kept"] == 5
    assert sum(d["after"][:5]) == pytest.approx(1.0)
    assert d["after"][5:] == [0.0] * 15
    # Renormalised: each kept token gains the same factor.
    ratio = d["after"][0] / d["before"][0]
    assert d["after"][4] / d["before"][4] == pytest.approx(ratio)
    p = describe_filtering(logits_1d, top_p=0.5)
    # Top-p keeps the first tokens whose cumulative probability reaches p.
    first_reaching = next(i for i, c in enumerate(p["cumulative"]) if c >= 0.5)
    assert p["kept"] == first_reaching + 1
    assert describe_filtering(logits_1d, top_p=0.3)["kept"] <= p["kept"]
    with pytest.raises(ValueError, match="top_p"):
        describe_filtering(logits_1d, top_p=1.5)
    with pytest.raises(ValueError, match="1-D"):
        describe_filtering(logits_1d[None])


def test_repeated_ngram_fraction():
    assert repeated_ngram_fraction([1, 2, 3, 4, 5], n=2) == 0.0
    # 1 2 1 2 1 2: bigrams 12 21 12 21 12 -> the last three repeat.
    assert repeated_ngram_fraction([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(3 / 5)
    assert repeated_ngram_fraction(torch.tensor([[7, 7, 7, 7]]), n=1) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="at least"):
        repeated_ngram_fraction([1, 2], n=3)
    with pytest.raises(ValueError, match="n must"):
        repeated_ngram_fraction([1, 2], n=0)


def test_generate_text_is_the_decoded_continuation(small_model):
    tok = CharTokenizer([chr(32 + i) for i in range(95)] + ["\n", "\t"])
    assert tok.vocab_size == 97
    text = generate_text(small_model, tok, "Hi", 8, seed=3)
    ids = generate(small_model, tok.encode("Hi"), 8, seed=3)[0].tolist()
    assert text == tok.decode(ids[2:]) and len(text) == 8
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text(small_model, tok, "", 3)
    assert generate_text(small_model, tok, "a", 0) == ""


def test_describe_filtering_with_penalties_and_min_p_equals_transformers():
    from course_lib.sampling import apply_penalties, describe_filtering, filter_logits

    torch.manual_seed(3)
    x = torch.randn(60) * 3
    context = [int(i) for i in torch.topk(x, 4).indices] + [7, 7]  # the likeliest are "seen"
    settings = dict(min_p=0.05, repetition_penalty=1.5, presence_penalty=0.4,
                    frequency_penalty=0.3)
    chain = SamplingParams(temperature=0.8, top_k=30, top_p=0.95)
    d = describe_filtering(x, chain, n=60, context=context, **settings)
    want = torch.softmax(filter_logits(x[None], chain, context=torch.tensor([context]),
                                       **settings)[0], -1)
    assert d["after"] == torch.sort(want, descending=True, stable=True).values.tolist()
    # without presence/frequency the whole chain is transformers' processors
    ref = _transformers_chain(1.5, 0.8, 30, 0.95, 0.05)(torch.tensor([context]), x[None].clone())
    d = describe_filtering(x, chain, n=60, min_p=0.05, repetition_penalty=1.5,
                           context=context)
    probs = torch.softmax(ref[0], -1)
    assert torch.allclose(torch.tensor(d["after"]), probs[d["ids"]])
    assert d["kept"] == int(torch.isfinite(ref).sum())
    # ranked by the penalised logits; "before" keeps the model's own probabilities
    penalised = apply_penalties(x, context, 1.5)
    assert d["ids"] == torch.sort(penalised, descending=True, stable=True).indices.tolist()
    assert d["before"] == torch.softmax(x, -1)[d["ids"]].tolist()
    assert d["ids"] != torch.sort(x, descending=True, stable=True).indices.tolist()
    # off values change nothing; penalties without context are refused
    assert describe_filtering(x, repetition_penalty=1.0, min_p=0.0, context=context) == \
        describe_filtering(x)
    with pytest.raises(ValueError, match="context"):
        describe_filtering(x, repetition_penalty=1.2)


def test_trace_decoding_equals_transformers_scores_and_generate():
    from course_lib.sampling import trace_decoding

    hf, ours = _random_gpt2(3)
    prompt = torch.tensor([[4, 9, 2, 30]])
    ref = hf.generate(prompt, do_sample=False, max_new_tokens=10, output_scores=True,
                      return_dict_in_generate=True, **_unpadded(prompt))
    trace = trace_decoding(ours, prompt, 10, k=3, temperature=0)
    assert [s.chosen for s in trace] == ref.sequences[0, 4:].tolist()
    for step, scores in zip(trace, ref.scores, strict=True):
        probs = torch.softmax(scores[0], dim=-1)
        top = torch.topk(probs, 3)
        assert [i for i, _ in step.candidates] == top.indices.tolist()
        assert [p for _, p in step.candidates] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert step.chosen == step.candidates[0][0]  # greedy picks the likeliest
        assert step.chosen_probability == pytest.approx(step.candidates[0][1])
    # sampled: the tokens generate draws with the same seed, each with the model's own p
    sampled = trace_decoding(ours, prompt, 12, k=61, temperature=1.5, top_k=20, seed=4)
    assert [s.chosen for s in sampled] == generate(ours, prompt, 12, temperature=1.5, top_k=20,
                                                   seed=4)[0, 4:].tolist()
    for s in sampled:
        assert sum(p for _, p in s.candidates) == pytest.approx(1.0, abs=1e-5)  # unfiltered
        assert s.chosen_probability == pytest.approx(dict(s.candidates)[s.chosen])
    assert any(s.chosen != s.candidates[0][0] for s in sampled)  # not always the top one


def test_trace_decoding_stops_and_rejects_bad_arguments(small_model):
    from course_lib.sampling import trace_decoding

    first = trace_decoding(small_model, [5, 6, 7], 1, temperature=0)[0].chosen
    trace = trace_decoding(small_model, [5, 6, 7], 10, temperature=0, stop_ids=first)
    assert [s.chosen for s in trace] == [first]
    with pytest.raises(ValueError, match="steps"):
        trace_decoding(small_model, [5, 6, 7], 0)
    with pytest.raises(ValueError, match="k must"):
        trace_decoding(small_model, [5, 6, 7], 2, k=0)
    with pytest.raises(ValueError, match="temperature"):
        trace_decoding(small_model, [5, 6, 7], 2, temperature=-1)
    with pytest.raises(ValueError, match="one sequence"):
        trace_decoding(small_model, [[5, 6], [7, 8]], 2)


def test_generated_tokens_train_like_any_tensor(small_model):
    """The loops run the model in inference_mode; what they return must still feed a training
    step (an inference tensor would refuse to be saved for backward)."""
    out = generate(small_model, torch.tensor([[1, 2, 3]]), 5, temperature=0)
    streamed = torch.stack(list(stream_generate(small_model, [[1, 2, 3]], 3, temperature=0)), 1)
    beams = beam_search(small_model, [[1, 2, 3]], 2, 4)
    for ids in (out, streamed, beams):
        assert not ids.is_inference()
        ids.add_(0)  # in-place works on them (an inference tensor refuses, outside the mode)
        _, loss = small_model.train()(ids[:, :-1], ids[:, 1:])
        loss.backward()
