"""Every exercise check answers any input whatsoever with a Feedback, and takes right answers
given as numpy or torch scalars."""

import itertools
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch
from test_checks_code_solutions import CODE_CHECKS

from course_lib.evaluation import bits_per_char, perplexity
from course_lib.lora import lora_parameter_count
from widgets.checks import (
    assistant,
    decoding,
    embeddings,
    evaluation,
    fine_tuning,
    multi_head,
    original_transformer,
    positional,
    self_attention,
    serving,
    shipped,
    tokenization,
    training,
    transformer_block,
)
from widgets.checks import fast_inference as fast
from widgets.feedback import Feedback


def _check_pattern_head(answer):
    model, tokenizer = shipped()
    return multi_head.check_pattern_head(answer, model, tokenizer)


CHECKS = {
    f.__name__: f
    for f in [
        tokenization.check_number_tokens,
        tokenization.check_first_merge,
        tokenization.check_space_word,
        embeddings.check_table_size,
        embeddings.check_closest_line,
        embeddings.check_pizza_query,
        positional.check_sinusoid_value,
        positional.check_rope_same_score,
        positional.check_unchanged_rows,
        self_attention.check_softmax,
        self_attention.check_causal_mask,
        self_attention.check_scale,
        multi_head.check_split_shape,
        multi_head.check_attention_parameters,
        training.check_shift,
        training.check_initial_loss,
        training.check_first_adam_step,
        decoding.check_greedy_token,
        decoding.check_top_p_count,
        decoding.check_cache_reason,
        fine_tuning.check_lora_count,
        fine_tuning.check_merge,
        fine_tuning.check_break_even_rank,
        evaluation.check_perplexity,
        evaluation.check_bits_per_char,
        evaluation.check_low_perplexity_text,
        transformer_block.check_layer_norm,
        transformer_block.check_block_parameters,
        transformer_block.check_lens_block,
        training.check_my_gpt_trains,
        original_transformer.check_cross_weight_count,
        fast.check_absmax_int8,
        fast.check_kv_cache_bytes,
        fast.check_tokens_per_round,
        assistant.check_masked_targets,
        assistant.check_dpo_loss,
        assistant.check_dpo_by_hand,
        assistant.check_group_advantages,
        assistant.check_refusal_interval,
        serving.check_users_per_gpu,
        *CODE_CHECKS,
    ]
}
CHECKS["check_pattern_head"] = _check_pattern_head


class Hostile:
    """An object whose every conversion raises."""

    def __repr__(self):
        raise RuntimeError("no repr")

    __str__ = __float__ = __int__ = __index__ = __len__ = __repr__

    def __iter__(self):
        raise RuntimeError("no iteration")

    def __eq__(self, other):
        raise RuntimeError("no comparison")

    __hash__ = None


def _raises(*args):
    raise ValueError("the learner's bug")


def _recurses(*args):
    return _recurses(*args)


def _nested(depth):
    value = [1]
    for _ in range(depth):
        value = [value]
    return value


# One input of each class no check expects: wrong types, values out of any range, text that
# cannot be encoded or is huge, containers empty, nested or endless, objects that refuse every
# conversion, and learner functions that raise, recurse or return junk.
BAD_INPUTS = {
    "str": "seven",
    "empty str": "",
    "lone surrogate": "\ud800",
    "megabyte str": "x" * 1_000_000,
    "bytes": b"\xff\xfe",
    "nan": math.nan,
    "-inf": -math.inf,
    "huge int": 10**400,
    "numpy negative int": np.int64(-1),
    "complex": 1 + 2j,
    "torch nan": torch.tensor(float("nan")),
    "torch 3-D": torch.zeros(2, 2, 2),
    "numpy object array": np.array([None, "a"], dtype=object),
    "list of empty": [[]],
    "pairs of huge ints": [(10**400, 1), (2, 10**400)],
    "deeply nested": _nested(5000),
    "dict": {"a": 1},
    "endless iterator": itertools.count(),
    "hostile": Hostile(),
    "function that raises": _raises,
    "function that recurses": _recurses,
    "function returning junk": lambda *a: "junk",
    "function returning nan": lambda W, *a: W * math.nan,
    "function returning wrong shape": lambda W, *a: W[:3],
}

@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_any_input_gets_a_useful_feedback(check):
    takes_code = "function" in check(3).message  # a code-writing exercise asks for a function
    for name, answer in BAD_INPUTS.items():
        fb = check(answer)
        where = f"{name}: {fb!r:.300}"
        assert isinstance(fb, Feedback) and not fb.ok, where
        message = fb.message
        # Each check reads its answer itself; the decorator's last resort is not what answered.
        assert "could not read your answer" not in message, where
        # One readable sentence or two: no printed matrix, memory address or traceback in it.
        assert "\n" not in message and 15 <= len(message) <= 400, where
        assert "0x" not in message and "Traceback" not in message, where
        if name.startswith("function that") and takes_code:
            # the learner's own error is what they need to see
            error = "ValueError: the learner's bug" if "raises" in name else "RecursionError"
            assert f"Your function raised {error}" in message, where
        elif "Your function raised" in message:  # a junk function broke on the check's input
            assert takes_code, where
        else:  # nothing from inside torch or the check: a sentence for the learner
            assert "Error" not in message, where
            assert message.rstrip(")'\"").endswith((".", "?")), where
        message.encode("utf-8")  # a notebook can show it
        assert fb._repr_html_() and repr(fb)


def test_no_answer_yet():
    for name, check in CHECKS.items():
        fb = check(None)
        assert not fb.ok and "None" in fb.message, name


def test_the_last_resort_still_answers():
    # A check that fails for a reason nobody foresaw still gives a Feedback, not a traceback.
    from widgets.feedback import exercise

    @exercise()
    def check_broken(answer):
        raise ZeroDivisionError

    fb = check_broken(3)
    assert not fb.ok and "could not read your answer 3" in fb.message


def _scalars(value, integer):
    dtypes = (np.int32, np.int64) if integer else (np.float32, np.float64)
    tdtypes = (torch.int32, torch.int64) if integer else (torch.float32, torch.float64)
    answers = [d(value) for d in dtypes] + [torch.tensor(value, dtype=d) for d in tdtypes] + [
        np.array(value, dtype=dtypes[1]), torch.tensor([value], dtype=tdtypes[1])
    ]
    if integer:  # a count is right in any numeric type that equals it: 4.0 is the count 4
        answers += [float(value), np.float64(value), torch.tensor(value, dtype=torch.float64),
                    Fraction(value), Decimal(value)]
    return answers


def _right_answers():
    model, tokenizer = shipped()
    vocab, d = model.transformer.wte.weight.shape
    sentence_ids = tokenizer.encode(evaluation.SENTENCE)
    C = 768
    cases = {
        "check_table_size": (_scalars(vocab * d, True), embeddings.check_table_size),
        "check_number_tokens": (_scalars(4, True), tokenization.check_number_tokens),
        "check_top_p_count": (_scalars(5, True), decoding.check_top_p_count),
        "check_attention_parameters": (
            _scalars(4 * C * C + 4 * C, True), multi_head.check_attention_parameters),
        "check_lora_count": (
            _scalars(lora_parameter_count(model, 8, fine_tuning.COUNT_TARGETS), True),
            fine_tuning.check_lora_count),
        "check_break_even_rank": (_scalars(d * 3 * d / (4 * d), False),
                                  fine_tuning.check_break_even_rank),
        "check_sinusoid_value": (_scalars(math.cos(10 / 10000 ** (4 / 16)), False),
                                 positional.check_sinusoid_value),
        "check_scale": (_scalars(16.0, False), self_attention.check_scale),
        "check_initial_loss": (_scalars(math.log(50257), False), training.check_initial_loss),
        "check_first_adam_step": (_scalars(-0.01, False), training.check_first_adam_step),
        "check_perplexity": (_scalars(perplexity(model, sentence_ids), False),
                             evaluation.check_perplexity),
        "check_bits_per_char": (
            _scalars(bits_per_char(model, tokenizer, evaluation.SENTENCE), False),
            evaluation.check_bits_per_char),
        "check_softmax": ([np.array([0.665, 0.245, 0.090], dtype=np.float32),
                           torch.softmax(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64), 0)],
                          self_attention.check_softmax),
        "check_unchanged_rows": ([np.array([2, 3]), torch.tensor([3, 2]), (np.int64(2), 3)],
                                 positional.check_unchanged_rows),
        "check_causal_mask": ([torch.triu(torch.ones(4, 4), 1).nonzero(),
                               torch.triu(torch.ones(4, 4), 1).nonzero().numpy()],
                              self_attention.check_causal_mask),
        "check_rope_same_score": ([torch.tensor([[5, 0], [20, 15], [13, 8]]),
                                   [(np.int64(5), np.int64(0)), (20, 15), (13, 8)]],
                                  positional.check_rope_same_score),
        "check_shift": ([(np.array(training.SHIFT_IDS[2:6]),
                          torch.tensor(training.SHIFT_IDS[3:7]))],
                        training.check_shift),
        "check_split_shape": ([(np.int64(2), np.int64(6), torch.tensor(10), 32),
                               torch.Size([2, 6, 10, 32])], multi_head.check_split_shape),
        "check_first_merge": ([(np.int64(ord("w")), np.uint8(ord("e"))),
                               np.array(["w", "e"])], tokenization.check_first_merge),
        "check_block_parameters": (_scalars(transformer_block.block_parameters(768), True),
                                   transformer_block.check_block_parameters),
        "check_kv_cache_bytes": (_scalars(2 * 32 * 8 * 128 * 8192 * 2, True),
                                 fast.check_kv_cache_bytes),
        "check_tokens_per_round": (_scalars(sum(0.8**i for i in range(5)), False),
                                   fast.check_tokens_per_round),
        "check_dpo_by_hand": (_scalars(math.log1p(math.exp(-0.3)), False),
                              assistant.check_dpo_by_hand),
        "check_users_per_gpu": (_scalars(137, True), serving.check_users_per_gpu),
        "check_cross_weight_count": (_scalars(4 * 22 * 12, True),
                                     original_transformer.check_cross_weight_count),
        "check_merge": ([lambda W, A, B, alpha, rank: (W.double() + alpha / rank * B.double()
                                                        @ A.double()),
                         lambda W, A, B, alpha, rank: (W + alpha / rank * B @ A).numpy()],
                        fine_tuning.check_merge),
    }
    return cases


RIGHT = [
    "check_table_size", "check_number_tokens", "check_top_p_count", "check_attention_parameters",
    "check_lora_count", "check_break_even_rank", "check_sinusoid_value", "check_scale",
    "check_initial_loss", "check_first_adam_step", "check_perplexity", "check_bits_per_char",
    "check_softmax", "check_unchanged_rows", "check_causal_mask", "check_rope_same_score",
    "check_shift", "check_split_shape", "check_first_merge", "check_merge",
    "check_block_parameters", "check_kv_cache_bytes", "check_tokens_per_round",
    "check_dpo_by_hand", "check_users_per_gpu", "check_cross_weight_count",
]


@pytest.fixture(scope="module")
def right_answers():
    return _right_answers()


def test_the_right_answer_table_is_complete(right_answers):
    assert sorted(right_answers) == sorted(RIGHT)


@pytest.mark.parametrize("name", RIGHT)
def test_right_answers_as_numpy_and_torch(name, right_answers):
    answers, check = right_answers[name]
    for answer in answers:
        fb = check(answer)
        assert fb.ok, (name, answer, fb.message)




def test_checks_leave_the_callers_model_in_its_mode():
    model, tokenizer = shipped()
    was_training = model.training
    calls = [
        lambda: evaluation.check_perplexity(1.0, model, tokenizer),
        lambda: evaluation.check_bits_per_char(1.0, model, tokenizer),
        lambda: decoding.check_greedy_token(" x", model, tokenizer),
        lambda: transformer_block.check_lens_block(0, model, tokenizer),
        lambda: multi_head.check_pattern_head((0, 0), model, tokenizer, n_windows=1),
        lambda: evaluation.check_continuation_logprob(
            lambda m, a, b: m.train() and 0.0, model, tokenizer),
    ]
    try:
        for mode in (True, False):
            for call in calls:
                model.train(mode)
                assert isinstance(call(), Feedback)
                assert model.training == mode and all(m.training == mode for m in model.modules())
    finally:
        model.train(was_training)
