"""The worked solution in each code-writing check's docstring (the text the lessons paste) runs
and is marked right, and the stub it gives the learner is not."""

import inspect
import math
import textwrap
from itertools import pairwise

import pytest
import regex
import torch

from course_lib.tokenization import GPT4_SPLIT_PATTERN
from course_lib.tokenization.bpe_train import _merge_pair
from widgets.checks import (
    decoding,
    embeddings,
    evaluation,
    fine_tuning,
    multi_head,
    original_transformer,
    positional,
    self_attention,
    serving,
    tokenization,
    training,
    transformer_block,
)

# test_checks_bad_input.py gives these to its hostile inputs too.
CODE_CHECKS = [
    tokenization.check_encode,
    embeddings.check_cosine_similarity,
    positional.check_sinusoidal,
    self_attention.check_causal_attention,
    multi_head.check_split_heads,
    training.check_training_step,
    transformer_block.check_gpt_forward,
    decoding.check_top_p,
    fine_tuning.check_lora_forward,
    evaluation.check_continuation_logprob,
    serving.check_blocks_needed,
    serving.check_parse_sse,
    original_transformer.check_cross_attention,
]


def _lesson_merge(ids, pair, new_id):
    """Lesson 1's merge(ids, pair, new_id), which the encode exercise builds on."""
    return _merge_pair(ids, *pair, new_id)


def _blocks(check) -> tuple[str, str]:
    """(the stub, the solution) of a check's docstring, as code."""
    task, solution = inspect.getdoc(check).split("Solution:")
    stub = task[task.rindex("\n    def "):]
    return textwrap.dedent(stub), textwrap.dedent(solution)


@pytest.mark.parametrize("check", CODE_CHECKS, ids=lambda c: c.__name__)
def test_the_worked_solution_is_right_and_the_stub_is_not(check):
    stub, solution = _blocks(check)
    for code, ok in ((solution, True), (stub, False)):
        assert code.strip().startswith("def ") and f"\n{check.__name__}(" in code
        names = {"torch": torch, "math": math, "regex": regex, "pairwise": pairwise,
                 "GPT4_SPLIT_PATTERN": GPT4_SPLIT_PATTERN, "merge": _lesson_merge,
                 check.__name__: check}
        exec(code.replace(f"\n{check.__name__}(", f"\n_result = {check.__name__}("), names)
        fb = names["_result"]
        assert fb.ok == ok, fb.message
        if not ok:  # the stub's body is ..., so the function returns None
            assert "None" in fb.message, fb.message


@pytest.mark.parametrize("check", CODE_CHECKS, ids=lambda c: c.__name__)
def test_an_answer_that_is_not_a_function_is_told_the_signature(check):
    stub, _ = _blocks(check)
    signature = stub.strip().splitlines()[0].removeprefix("def ").removesuffix(":")
    for answer in (3, "def f(): pass", [None]):
        fb = check(answer)
        assert not fb.ok and f"a function (def {signature}: ...)" in fb.message, fb.message
    assert f"your function {signature}." in check(None).message
