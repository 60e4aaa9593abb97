"""Lesson 9's exercise checks: a right answer, the common wrong ones, and None."""

import torch

from course_lib.model import GPT, GPTConfig
from course_lib.sampling import generate, next_token_logits
from course_lib.tokenization import CharTokenizer
from widgets.checks.decoding import (
    CACHE_ANSWER,
    CACHE_CHOICES,
    GREEDY_PROMPT,
    TOP_P,
    TOP_P_PROBS,
    check_cache_reason,
    check_greedy_token,
    check_top_p_count,
)


def test_check_greedy_token_uses_the_given_model():
    tok = CharTokenizer([chr(32 + i) for i in range(95)] + ["\n", "\t"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    ids = tok.encode(GREEDY_PROMPT)
    greedy = generate(model, ids, 1, temperature=0)[0, -1].item()
    want = tok.decode([greedy])
    assert greedy == next_token_logits(model, ids).argmax().item()
    assert check_greedy_token(want, model, tok)
    other = tok.decode([next_token_logits(model, ids).argsort()[-2].item()])
    feedback = check_greedy_token(other, model, tok)
    assert not feedback and "most likely" in feedback.message
    assert not check_greedy_token(None, model, tok)
    assert not check_greedy_token(5, model, tok)
    assert not check_greedy_token("two tokens", model, tok)


def test_check_greedy_token_whitespace_hint():
    class WordTokenizer:  # tokens that carry their leading space, as BPE tokens do
        pieces = ["a", " b", "c"]

        def encode(self, text):
            return [self.pieces.index(text)] if text in self.pieces else [0, 0]

        def decode(self, ids):
            return "".join(self.pieces[i] for i in ids)

    class AlwaysB(GPT):
        def forward(self, idx, targets=None, **kw):
            logits = torch.zeros(idx.shape[0], idx.shape[1], 3)
            logits[..., 1] = 5.0
            return logits, None

    model = AlwaysB(GPTConfig(vocab_size=3, block_size=64, n_layer=1, n_head=1, n_embd=8))
    tok = WordTokenizer()
    assert check_greedy_token(" b", model, tok)
    assert "whitespace" in check_greedy_token("b", model, tok).message
    assert "probability" in check_greedy_token("c", model, tok).message


def test_check_top_p_count():
    probs = torch.tensor(TOP_P_PROBS)
    # The smallest prefix (most likely first) whose total reaches p, computed directly.
    want = int((probs.cumsum(0) < TOP_P).sum()) + 1
    assert check_top_p_count(want)
    assert "One short" in check_top_p_count(want - 1).message
    assert "Too many" in check_top_p_count(want + 1).message
    assert not check_top_p_count(1)
    assert not check_top_p_count(None)
    assert not check_top_p_count(4.5)


def test_check_cache_reason():
    assert check_cache_reason(CACHE_ANSWER)
    assert check_cache_reason(f" ({CACHE_ANSWER.upper()}) ")
    for letter in CACHE_CHOICES:
        if letter != CACHE_ANSWER:
            feedback = check_cache_reason(letter)
            assert not feedback and feedback.message
    assert not check_cache_reason(None)
    assert "Choose one" in check_cache_reason("e").message


def _top_p(logits, p, before=True):
    import torch

    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    total = torch.cumsum(sorted_probs, dim=-1)
    keep_sorted = (total - sorted_probs < p) if before else (total < p)
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return logits.masked_fill(~keep, float("-inf"))


def test_top_p_right_and_the_usual_slips():
    import torch

    from course_lib.sampling import top_p_filter
    from widgets.checks.decoding import check_top_p

    assert check_top_p(_top_p)
    assert check_top_p(top_p_filter)
    assert "None" in check_top_p(None).message
    one_short = check_top_p(lambda logits, p: _top_p(logits, p, before=False))
    assert not one_short and "yours keeps" in one_short.message
    assert "takes the total to p" in one_short.message

    def sorted_order(logits, p):
        return torch.sort(_top_p(logits, p), descending=True).values

    in_place = check_top_p(sorted_order)
    assert not in_place and "not in their places" in in_place.message
    probs = check_top_p(lambda logits, p: torch.softmax(_top_p(logits, p), -1))
    assert not probs and "not probabilities" in probs.message
    zeros = check_top_p(lambda logits, p: _top_p(logits, p).nan_to_num(neginf=0.0))
    assert not zeros and "not 0" in zeros.message
    assert "shape" in check_top_p(lambda logits, p: logits[:3]).message
