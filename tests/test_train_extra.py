"""train_with_reports and sample_report: measuring and sampling a model while it trains."""

import math

import pytest
import torch

from course_lib.model import GPT, GPTConfig
from course_lib.sampling import generate_text
from course_lib.tokenization import CharTokenizer
from course_lib.train import TrainConfig, sample_report, train, train_with_reports

TEXT = "to be or not to be, that is the question.\n" * 60


@pytest.fixture
def tok() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT)


def tiny(tok) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                         n_embd=32))


def config(**kw) -> TrainConfig:
    base = dict(max_steps=40, batch_size=8, learning_rate=1e-2, warmup_steps=5, eval_interval=20,
                eval_batches=2, progress=False, device="cpu", seed=3)
    return TrainConfig(**(base | kw))


def test_reports_at_the_chosen_steps_and_training_is_unchanged(tok):
    ids = torch.tensor(tok.encode(TEXT))
    report = sample_report(tok, "to ", TEXT[:200], max_new_tokens=12, seed=1)
    seen = []
    history, reports = train_with_reports(tiny(tok), ids, ids[:400], config(), report,
                                          [0, 20, 40], callback=seen.append)
    assert [r["step"] for r in reports] == [0, 20, 40]
    # Sampling and measuring in between must not change the training run itself.
    assert history["train_loss"] == train(tiny(tok), ids, ids[:400], config())["train_loss"]
    # At step 0 the model is untrained: its loss is about ln(vocab size).
    assert reports[0]["val_loss"] == pytest.approx(math.log(tok.vocab_size), abs=0.3)
    assert reports[-1]["val_loss"] < reports[1]["val_loss"] < reports[0]["val_loss"]
    assert reports[-1]["bits_per_char"] < reports[0]["bits_per_char"]
    assert all(isinstance(r["sample"], str) and len(r["sample"]) == 12 for r in reports)
    assert seen[0] == {"step": 0, "report": reports[0]}
    assert [i["step"] for i in seen if "report" in i] == [0, 20, 40]
    assert len(seen) == 41 and "train_loss" in seen[1]


def test_the_sample_is_the_seeded_sample_of_the_model(tok):
    model = tiny(tok)
    r = sample_report(tok, "be", TEXT[:100], max_new_tokens=10, seed=5)(model)
    assert r["sample"] == generate_text(model, tok, "be", 10, seed=5)


def test_bad_arguments(tok):
    ids = torch.tensor(tok.encode(TEXT))
    report = sample_report(tok, "to", TEXT[:100])
    with pytest.raises(ValueError, match="report_at"):
        train_with_reports(tiny(tok), ids, None, config(), report, [0, 41])
    with pytest.raises(ValueError, match="prompt"):
        sample_report(tok, "", TEXT)
    with pytest.raises(ValueError, match="eval_text"):
        sample_report(tok, "to", "t")


def test_a_callback_returning_false_stops_early(tok):
    ids = torch.tensor(tok.encode(TEXT))
    report = sample_report(tok, "to", TEXT[:100], max_new_tokens=4)
    history, reports = train_with_reports(tiny(tok), ids, None, config(), report, [0, 5, 30],
                                          callback=lambda info: info["step"] < 10)
    assert len(history["step"]) == 10
    assert [r["step"] for r in reports] == [0, 5]
