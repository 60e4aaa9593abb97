import pytest
import torch

from course_lib.sampling import (
    apply_temperature,
    entropy_bits,
    generate,
    next_token_probs,
    stream_generate,
    top_k_filter,
    top_p_filter,
)


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
