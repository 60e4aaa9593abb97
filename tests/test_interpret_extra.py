import string

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
    kl_divergence,
    next_token_probs_with_heads,
    pattern_targets,
    text_windows,
    tile_heads,
    token_labels,
    token_pieces,
    uniform_attention_on,
)
from course_lib.tokenization import BPETokenizer, CharTokenizer

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
