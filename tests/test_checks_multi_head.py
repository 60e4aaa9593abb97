import string

import pytest
import torch

from course_lib.data import load_corpus
from course_lib.interpret import head_pattern_scores, text_windows
from course_lib.pretrained import MODEL_FILE, load_pretrained
from course_lib.tokenization import CharTokenizer
from widgets.checks.multi_head import (
    check_attention_parameters,
    check_pattern_head,
    check_split_shape,
)

PLAY = "ROMEO:\nsoft, what light\nthrough yonder window\n\nJULIET:\nah me\n\n" * 6


def test_split_shape():
    assert check_split_shape((2, 6, 10, 32))
    assert check_split_shape([2, 6, 10, 32])
    assert check_split_shape(torch.Size([2, 6, 10, 32]))
    assert check_split_shape((3, 4, 5, 2), batch=3, T=5, n_embd=8, n_head=4)
    assert "after .view()" in check_split_shape((2, 10, 6, 32)).message
    assert "192 / 6" in check_split_shape((2, 6, 10, 192)).message
    assert "folded" in check_split_shape((12, 10, 32)).message
    assert not check_split_shape((2, 6, 32, 10))
    assert "tuple of ints" in check_split_shape(torch.zeros(2, 6, 10, 32)).message
    assert "tuple of ints" in check_split_shape("2, 6, 10, 32").message


def test_attention_parameters():
    assert check_attention_parameters(2_362_368)  # GPT-2 small: 4 * 768² + 4 * 768
    assert check_attention_parameters(4 * 192 * 192 + 4 * 192, n_embd=192, n_head=6)
    assert "bias" in check_attention_parameters(4 * 768 * 768).message
    assert "output projection" in check_attention_parameters(3 * 768 * 768 + 3 * 768).message
    assert "share" in check_attention_parameters(12 * 2_362_368).message
    assert not check_attention_parameters(1000)
    assert check_attention_parameters(2_362_368.0)  # the right count as a float is right
    assert not check_attention_parameters(2.36e6)  # a whole number, but not the count
    assert "whole number" in check_attention_parameters(2_362_368.5).message
    assert "whole number" in check_attention_parameters(True).message


@pytest.mark.parametrize("check", [check_split_shape, check_attention_parameters])
def test_none_is_answered_kindly(check):
    feedback = check(None)
    assert not feedback and "Replace None" in feedback.message


@pytest.fixture
def chars() -> CharTokenizer:
    return CharTokenizer.from_text(string.ascii_letters + string.digits + string.punctuation
                                   + " \n\t")


def test_pattern_head_accepts_the_best_head_only(small_model, chars):
    windows = text_windows(chars, PLAY, small_model.config.block_size, 8)
    for pattern in ("previous token", "speaker name"):
        scores = head_pattern_scores(small_model, chars, windows)[pattern][0]
        best = divmod(int(scores.argmax()), 4)
        worst = divmod(int(scores.argmin()), 4)
        feedback = check_pattern_head(best, small_model, chars, pattern, text=PLAY)
        assert feedback, feedback.message
        assert f"{scores.max().item():.0%}" in feedback.message
        feedback = check_pattern_head(list(worst), small_model, chars, pattern, text=PLAY)
        assert not feedback and f"{scores.min().item():.0%}" in feedback.message
        assert "evenly" in feedback.message


def test_pattern_head_bad_answers(small_model, chars):
    check = lambda a: check_pattern_head(a, small_model, chars, text=PLAY)  # noqa: E731
    assert "Replace None" in check(None).message
    assert "numbered 0 to 1" in check((2, 0)).message
    assert "heads 0 to 3" in check((0, 4)).message
    assert "two ints" in check((1,)).message
    assert "two ints" in check("layer 1").message
    with pytest.raises(ValueError, match="pattern must be"):
        check_pattern_head((0, 0), small_model, chars, pattern="nonsense")


@pytest.mark.skipif(not MODEL_FILE.exists(), reason="the shipped model is not exported yet")
def test_pattern_head_on_the_shipped_model():
    model, tokenizer = load_pretrained()
    windows = text_windows(tokenizer, load_corpus("val"), model.config.block_size, 8)
    scores, _ = head_pattern_scores(model, tokenizer, windows)["speaker name"]
    best = divmod(int(scores.argmax()), model.config.n_head)
    assert check_pattern_head(best, model, tokenizer, "speaker name")
    other = ((best[0] + 1) % model.config.n_layer, best[1])
    assert not check_pattern_head(other, model, tokenizer, "speaker name")


def test_split_heads_right_and_the_usual_slips():
    from widgets.checks.multi_head import check_split_heads

    def split(x, n_head):
        B, T, C = x.shape
        return x.view(B, T, n_head, C // n_head).transpose(1, 2)

    assert check_split_heads(split)
    assert "None" in check_split_heads(None).message
    straight = check_split_heads(lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1))
    assert not straight and "another order" in straight.message and "first" in straight.message
    swapped = check_split_heads(lambda x, h: x.view(*x.shape[:2], -1, h).permute(0, 3, 1, 2))
    assert not swapped and "contiguous slice" in swapped.message
    no_transpose = check_split_heads(lambda x, h: x.view(*x.shape[:2], h, -1))
    assert not no_transpose and "transpose(1, 2)" in no_transpose.message
    assert "not x's" in check_split_heads(lambda x, h: 2 * split(x, h)).message
