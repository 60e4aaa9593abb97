"""Looking inside a GPT: attention maps, hidden states, head patterns, ablation, bad input."""

import math
import string

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.interpret import (
    HEAD_PATTERNS,
    attention_and_probs,
    attention_maps,
    attention_on,
    compare_top_tokens,
    head_ablation_losses,
    head_pattern_scores,
    hidden_states,
    kl_divergence,
    next_token_probs_with_heads,
    pattern_targets,
    text_windows,
    tile_heads,
    token_labels,
    token_pieces,
    top_tokens,
    uniform_attention_on,
)
from course_lib.tokenization import BPETokenizer, CharTokenizer


class Digits:
    def decode(self, ids):
        return "".join(str(i % 10) for i in ids)


def test_attention_maps_match_the_model(small_model):
    ids = torch.randint(0, 97, (12,))
    maps = attention_maps(small_model, ids)
    assert maps.shape == (2, 4, 12, 12)
    _, _, weights = small_model(ids[None], return_attention=True)
    assert torch.allclose(maps[1], weights[1][0])
    assert torch.allclose(maps.sum(-1), torch.ones(2, 4, 12), atol=1e-5)


def test_hidden_states_end_in_the_logits(small_model):
    ids = torch.randint(0, 97, (9,))
    states = hidden_states(small_model, ids)
    assert len(states) == 3 and states[0].shape == (9, 32)
    logits = small_model.lm_head(small_model.transformer.ln_f(states[-1]))
    assert torch.allclose(logits, small_model(ids[None])[0][0], atol=1e-5)
    emb = small_model.transformer.wte(ids) + small_model.transformer.wpe(torch.arange(9))
    assert torch.allclose(states[0], emb)


def test_switching_heads_off_changes_the_prediction(small_model):
    ids = torch.randint(0, 97, (10,))
    full = next_token_probs_with_heads(small_model, ids)
    assert torch.allclose(full, torch.softmax(small_model(ids[None])[0][0, -1], -1))
    mask = torch.ones(2, 4)
    assert torch.allclose(next_token_probs_with_heads(small_model, ids, mask), full)
    mask[:, :] = 0
    assert not torch.allclose(next_token_probs_with_heads(small_model, ids, mask), full)


def test_top_tokens():
    probs = torch.tensor([0.1, 0.6, 0.3])
    rows = top_tokens(probs, Digits(), k=2)
    assert [(p, round(v, 3)) for p, v in rows] == [("1", 0.6), ("2", 0.3)]


def test_visible_piece_shows_spaces_newlines_and_empty_tokens():
    from course_lib.interpret import visible_piece

    assert visible_piece(" king\n") == "·king↵"
    assert visible_piece("") == "∅"


PLAY = "ROMEO:\nsoft\nlight\n\nJULIET:\nah me\n\nROMEO:\nshe speaks\n"


@pytest.fixture
def chars() -> CharTokenizer:
    # 97 characters, one per id of small_model's vocabulary
    return CharTokenizer.from_text(string.ascii_letters + string.digits + string.punctuation
                                   + " \n\t")


def targets_of(text: str, pattern: str) -> dict[int, list[int]]:
    pieces = [c.encode() for c in text]
    t = pattern_targets(pieces, pattern)
    return {i: t[i].nonzero().flatten().tolist() for i in range(len(text)) if t[i].any()}


def test_token_pieces_join_to_the_text_even_inside_a_character():
    tok = BPETokenizer.train("naïve café " * 50, vocab_size=260)  # é stays two tokens
    text = "café ROMEO:\nsoft\n\n"
    ids = tok.encode(text)
    assert b"".join(token_pieces(tok, ids)) == text.encode()
    labels = token_labels(tok, ids)
    assert len(labels) == len(ids) and "".join(labels).count("↵") == 3
    assert " " not in "".join(labels) and "\n" not in "".join(labels)


def test_simple_patterns():
    prev = targets_of("abcd", "previous token")
    assert prev == {1: [0], 2: [1], 3: [2]}  # query 0 has no target at all
    assert targets_of("abcd", "same token") == {1: [1], 2: [2], 3: [3]}
    assert targets_of("abcd", "first token") == {1: [0], 2: [0], 3: [0]}
    # the latest newline strictly before the query
    assert targets_of("a\nb\nc", "last newline") == {2: [1], 3: [1], 4: [3]}


def test_speaker_name_is_the_latest_name_line_before_the_query():
    t = targets_of(PLAY, "speaker name")
    romeo, juliet = list(range(0, 6)), list(range(19, 26))  # "ROMEO:" and "JULIET:"
    assert PLAY[19:26] == "JULIET:"
    assert t[8] == romeo and t[18] == romeo
    assert t[27] == juliet  # inside Juliet's speech
    assert 3 not in t  # a query inside the name line itself has no target yet
    second = PLAY.index("ROMEO:", 10)
    assert t[second + 8] == list(range(second, second + 6))


def test_a_line_ending_in_a_colon_inside_a_speech_is_not_a_name():
    text = "KING:\nhear me:\nnow\n"
    t = targets_of(text, "speaker name")
    assert t[len(text) - 1] == list(range(0, 5))


def test_unknown_pattern_is_refused():
    with pytest.raises(ValueError, match="pattern must be one of"):
        pattern_targets([b"a", b"b"], "next token")
    assert set(HEAD_PATTERNS) >= {"previous token", "speaker name"}


def test_attention_on_a_perfect_previous_token_head_is_one():
    T = 6
    perfect = torch.zeros(T, T)
    perfect[0, 0] = 1
    perfect[torch.arange(1, T), torch.arange(T - 1)] = 1
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    maps = torch.stack([perfect, uniform])[None]  # (1 layer, 2 heads, T, T)
    targets = pattern_targets([b"x"] * T, "previous token")
    scores = attention_on(maps, targets)
    assert scores.shape == (1, 2)
    assert scores[0, 0] == pytest.approx(1.0)
    # an even spread matches the baseline exactly: mean of 1/(i+1) over queries 1..T-1
    expected = sum(1 / (i + 1) for i in range(1, T)) / (T - 1)
    assert scores[0, 1] == pytest.approx(expected)
    assert uniform_attention_on(targets) == pytest.approx(expected)
    with pytest.raises(ValueError, match="targets must be"):
        attention_on(maps, targets[:3, :3])
    with pytest.raises(ValueError, match="no query has a target"):
        attention_on(maps, torch.zeros(T, T, dtype=torch.bool))


def test_text_windows_start_at_speeches(chars):
    windows = text_windows(chars, PLAY * 3, length=12, n=4)
    assert len(windows) == 4 and all(len(w) == 12 for w in windows)
    starts = [chars.decode(w) for w in windows]
    assert all(s.startswith(("ROMEO:", "JULIET:")) for s in starts)
    assert len(set(map(tuple, windows))) > 1
    with pytest.raises(ValueError, match="shorter than one window"):
        text_windows(chars, "abc", length=12, n=1)
    with pytest.raises(ValueError, match="length must be"):
        text_windows(chars, PLAY, length=1, n=1)


def test_head_pattern_scores(small_model, chars):
    windows = text_windows(chars, PLAY * 4, length=32, n=3)
    scores = head_pattern_scores(small_model, chars, windows)
    assert set(scores) == set(HEAD_PATTERNS)
    for score, baseline in scores.values():
        assert score.shape == (2, 4)
        assert ((score >= 0) & (score <= 1 + 1e-6)).all() and 0 < baseline <= 1
    maps = attention_maps(small_model, windows[0])
    targets = pattern_targets(token_pieces(chars, windows[0]), "previous token")
    one = head_pattern_scores(small_model, chars, windows[:1])["previous token"][0]
    assert torch.allclose(one, attention_on(maps, targets))


def test_head_ablation_losses(small_model):
    torch.manual_seed(1)
    windows = torch.randint(0, 97, (3, 20)).tolist()
    full, losses = head_ablation_losses(small_model, windows)
    x = torch.tensor(windows)
    assert full == pytest.approx(small_model(x[:, :-1], x[:, 1:])[1].item())
    assert losses.shape == (2, 4)
    mask = torch.ones(2, 4)
    mask[1, 2] = 0
    expected = small_model(x[:, :-1], x[:, 1:], head_mask=mask)[1].item()
    assert losses[1, 2].item() == pytest.approx(expected, rel=1e-5)
    assert not torch.allclose(losses, torch.full((2, 4), full))
    with pytest.raises(ValueError, match="equally long"):
        head_ablation_losses(small_model, [[1, 2, 3], [1, 2]])
    with pytest.raises(ValueError, match="block_size"):
        head_ablation_losses(small_model, [[1] * 40])


def test_attention_and_probs_is_one_pass_of_both(small_model):
    ids = torch.randint(0, 97, (11,))
    maps, probs = attention_and_probs(small_model, ids)
    assert torch.allclose(maps, attention_maps(small_model, ids))
    assert torch.allclose(probs, next_token_probs_with_heads(small_model, ids))
    mask = torch.ones(2, 4)
    mask[0] = 0
    maps_off, probs_off = attention_and_probs(small_model, ids, mask)
    assert torch.allclose(probs_off, next_token_probs_with_heads(small_model, ids, mask))
    assert torch.allclose(maps_off[0], maps[0])  # layer 0 still sees the same input
    assert not torch.allclose(maps_off[1], maps[1])  # layer 1 does not
    with pytest.raises(ValueError, match="head_mask must have shape"):
        attention_and_probs(small_model, ids, torch.ones(4, 2))


def test_kl_divergence():
    p = torch.tensor([0.5, 0.3, 0.2, 0.0])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    assert kl_divergence(p, p) == 0.0
    expected = F.kl_div(q.log(), p, reduction="sum").item()
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-5)
    assert kl_divergence(p, q) > 0
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(p, q[:3])


def test_compare_top_tokens_shows_what_was_lost_and_gained():
    class Digits:
        def decode(self, ids):
            return "".join(str(i) for i in ids)

    before = torch.tensor([0.6, 0.3, 0.05, 0.05, 0.0])
    after = torch.tensor([0.1, 0.3, 0.05, 0.05, 0.5])
    rows = compare_top_tokens(before, after, Digits(), k=3)
    assert [r[0] for r in rows] == ["0", "4", "1"]
    assert rows[1][1:] == (0.0, 0.5)
    assert len(compare_top_tokens(before, after, Digits(), k=50)) == 5
    with pytest.raises(ValueError, match="k must be"):
        compare_top_tokens(before, after, Digits(), k=0)


def test_tile_heads():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).view(2, 3, 4, 4)
    grid = tile_heads(maps, gap=1)
    assert grid.shape == (2 * 5 - 1, 3 * 5 - 1)
    assert torch.equal(grid[5:9, 10:14], maps[1, 2])
    assert torch.isnan(grid[4]).all() and torch.isnan(grid[:, 9]).all()
    assert tile_heads(maps, gap=0).shape == (8, 12)
    with pytest.raises(ValueError, match="maps must be"):
        tile_heads(maps[0])


# ----- the caller's mode is kept; bad input gets a clear error ----------------------------------

ONE_PASS = {
    "attention_maps": lambda m, ids: attention_maps(m, ids),
    "hidden_states": lambda m, ids: hidden_states(m, ids),
    "next_token_probs_with_heads": lambda m, ids: next_token_probs_with_heads(m, ids),
    "attention_and_probs": lambda m, ids: attention_and_probs(m, ids),
    "head_ablation_losses": lambda m, ids: head_ablation_losses(m, [ids]),
}


@pytest.mark.parametrize("call", ONE_PASS.values(), ids=ONE_PASS.keys())
def test_the_callers_training_mode_is_kept(small_model, call):
    small_model.train()
    call(small_model, [1, 2, 3, 4])
    assert small_model.training and all(m.training for m in small_model.modules())
    small_model.eval()
    call(small_model, [1, 2, 3, 4])
    assert not small_model.training
    assert torch.is_grad_enabled()


def test_hidden_states_in_training_mode_equal_eval_mode(small_model):
    for m in small_model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    expected = hidden_states(small_model.eval(), [5, 6, 7])
    got = hidden_states(small_model.train(), [5, 6, 7])
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


BAD_IDS = [
    ([], ValueError, "empty"),
    ([1, 97], ValueError, "outside the vocabulary"),  # small_model has 97 tokens
    ([-1, 2], ValueError, "outside the vocabulary"),
    ([1.0, 2.0], TypeError, "integer"),
    (np.array([0.5]), TypeError, "integer"),
    ([[1, 2], [3]], TypeError, "ids"),
    ([[1, 2], [3, 4]], ValueError, "one sequence"),
    ("hello", TypeError, "encode"),
    (None, TypeError, "ids"),
    ([2**70], TypeError, "ids"),
    (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, "shape"),
]
BAD_IDS_CALLS = {k: v for k, v in ONE_PASS.items() if k != "head_ablation_losses"}


@pytest.mark.parametrize("ids, error, match", BAD_IDS)
@pytest.mark.parametrize("call", BAD_IDS_CALLS.values(), ids=BAD_IDS_CALLS.keys())
def test_bad_ids(small_model, call, ids, error, match):
    with pytest.raises(error, match=match):
        call(small_model, ids)


@pytest.mark.parametrize("ids", [np.array([1, 2, 3]), [[1, 2, 3]], (np.int32(1), 2, 3),
                                 torch.tensor([1, 2, 3], dtype=torch.int16)])
def test_ids_in_any_integer_form(small_model, ids):
    assert torch.equal(attention_maps(small_model, ids), attention_maps(small_model, [1, 2, 3]))


BAD_HEAD_MASKS = [
    (torch.ones(4, 2), ValueError, "shape"),
    (torch.ones(2), ValueError, "shape"),
    (torch.ones(2, 4, 1), ValueError, "shape"),
    (torch.tensor(1.0), ValueError, "shape"),
    ([[1, 1], [1, 1]], ValueError, "shape"),
    (torch.full((2, 4), math.nan), ValueError, "NaN"),
    (torch.full((2, 4), math.inf), ValueError, "NaN"),
    (torch.ones(2, 4, dtype=torch.complex64), TypeError, "real"),
    ("all", TypeError, "head_mask"),
    ([[1, 1], [1]], TypeError, "head_mask"),
]


@pytest.mark.parametrize("mask, error, match", BAD_HEAD_MASKS)
@pytest.mark.parametrize("call", [next_token_probs_with_heads, attention_and_probs])
def test_bad_head_mask(small_model, call, mask, error, match):
    with pytest.raises(error, match=match):
        call(small_model, [1, 2, 3], mask)


def test_head_mask_in_other_forms(small_model):
    expected = next_token_probs_with_heads(small_model, [1, 2, 3], torch.ones(2, 4))
    for mask in (np.ones((2, 4)), [[1] * 4] * 2, torch.ones(2, 4, dtype=torch.float64),
                 torch.ones(2, 4, dtype=torch.bool)):
        assert torch.allclose(next_token_probs_with_heads(small_model, [1, 2, 3], mask), expected)


BAD_WINDOWS = [
    ([], ValueError, "non-empty"),
    ([[1, 2, 3], [1, 2]], ValueError, "equally long"),
    ([[1]], ValueError, "2 to block_size"),
    ([list(range(40))], ValueError, "block_size"),
    ([[1, 97]], ValueError, "outside the vocabulary"),  # a target outside the vocabulary
    ([[1, -1]], ValueError, "outside the vocabulary"),
    ([[1.0, 2.0]], TypeError, "integer"),
    ("ab", TypeError, "encode"),
    (None, TypeError, "windows"),
]


@pytest.mark.parametrize("windows, error, match", BAD_WINDOWS)
def test_head_ablation_bad_windows(small_model, windows, error, match):
    with pytest.raises(error, match=match):
        head_ablation_losses(small_model, windows)


@pytest.mark.parametrize("call, error, match", [
    (lambda tok: top_tokens(torch.ones(3) / 3, tok, k=0), ValueError, "k must be"),
    (lambda tok: top_tokens(torch.ones(3) / 3, tok, k=1.5), TypeError, "k must be"),
    (lambda tok: compare_top_tokens(torch.ones(3), torch.ones(3), tok, k=-1), ValueError, "k"),
    (lambda tok: text_windows(tok, PLAY, 2.5, 1), TypeError, "length"),
    (lambda tok: text_windows(tok, PLAY, 4, 0), ValueError, "n must be"),
    (lambda tok: text_windows(tok, None, 4, 1), TypeError, "text"),
    (lambda tok: text_windows(tok, "", 4, 1), ValueError, "text"),
    (lambda tok: tile_heads(torch.ones(1, 1, 2, 2), gap=-1), ValueError, "gap"),
    (lambda tok: tile_heads(torch.ones(1, 1, 2, 2), gap=None), TypeError, "gap"),
])
def test_bad_arguments(chars, call, error, match):
    with pytest.raises(error, match=match):
        call(chars)
