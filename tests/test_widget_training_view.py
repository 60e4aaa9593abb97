"""TrainingView: a run trains, plots both losses, reports at 0, N/2 and N; controls matter."""

import html
import math

import pytest
import torch

from course_lib.model import GPTConfig
from course_lib.tokenization import CharTokenizer
from widgets.training_view import TrainingView

TEXT = "to be or not to be, that is the question.\nwhether 'tis nobler in the mind.\n" * 40


@pytest.fixture
def view():
    tok = CharTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32)
    return TrainingView(tok, ids, config, eval_text=TEXT[:300], prompt="to ", learning_rate=1e-2,
                        steps=40, batch_size=8, sample_tokens=10, device="cpu")


def test_run_trains_and_shows_losses_and_samples(view):
    assert view.model is None and list(view.figure.data[0].y) == []
    history = view.run()
    assert history is view.history and len(history["train_loss"]) == 40
    assert list(view.figure.data[0].y) == pytest.approx(history["train_loss"], abs=5e-5)
    assert list(view.figure.data[0].x) == list(range(1, 41))
    # Held-out loss at 0, every tenth of the run, and at the end; it falls from about ln(V).
    assert view.val_steps == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    assert list(view.figure.data[1].y) == pytest.approx(view.val_losses, abs=5e-5)
    assert view.val_losses[0] == pytest.approx(math.log(view.tokenizer.vocab_size), abs=0.3)
    assert view.val_losses[-1] < view.val_losses[0] - 0.5
    assert [r["step"] for r in view.reports] == [0, 20, 40]
    assert view.reports[-1]["bits_per_char"] < view.reports[0]["bits_per_char"]
    for r in view.reports:
        assert len(r["sample"]) == 10 and html.escape(r["sample"]) in view.samples.value
    assert view.progress.value == 40 and "done" in view.status.value
    assert not view.start.disabled and not view.model.training


def test_runs_are_repeatable_and_the_controls_change_them(view):
    first = view.run()["train_loss"]
    assert view.run()["train_loss"] == first  # same seed, same controls: same run
    view.learning_rate.value = 1e-3
    slow = view.run()["train_loss"]
    assert slow[0] == first[0]  # the same fresh model and the same first batch
    assert slow[-1] > first[-1]  # a 10x smaller learning rate learns less in 40 steps
    view.steps.value = 60
    assert len(view.run()["step"]) == 60
    assert view.progress.max == 60 and [r["step"] for r in view.reports] == [0, 30, 60]
    assert tuple(view.figure.layout.xaxis.range) == (0, 60)


def test_the_button_runs_training_in_the_background(view):
    view.start.click()
    view._thread.join(timeout=300)
    assert view.history is not None and len(view.history["step"]) == 40
    assert not view.start.disabled and view.stop.disabled


def test_stop_ends_the_run_early_and_keeps_what_it_has(view):
    view.steps.value = 3000
    stopped_at = []

    def stop_soon(info, step=view._on_step):
        result = step(info)
        if info["step"] == 5:
            assert not view.stop.disabled  # Stop is offered while a run is going
            view.stop.click()
            stopped_at.append(5)
        return result

    view._on_step = stop_soon
    view.start.click()
    view._thread.join(timeout=300)
    # clicked during step 5's callback: the run ends after the next step
    assert stopped_at == [5] and len(view.history["step"]) == 6
    assert view.status.value.startswith("stopped: 6 steps") and view.stop.disabled


def test_earlier_runs_stay_drawn_faintly(view):
    first = view.run()["train_loss"]
    assert not any(trace.visible for trace in view.figure.data[2:])
    view.learning_rate.value = 1e-3
    view.run()
    ghost = view.figure.data[2]
    assert ghost.visible and list(ghost.y) == first and "1.0e-02" in ghost.name
    for _ in range(4):
        view.run()
    assert len(view.figure.data) == 2 + 3 and all(t.visible for t in view.figure.data[2:])


@pytest.mark.parametrize("bad", [dict(steps=0), dict(steps=10**6), dict(learning_rate=float("nan")),
                                 dict(learning_rate=5.0), dict(batch_size=0),
                                 dict(eval_text=""), dict(prompt=None)])
def test_nonsense_constructor_arguments_are_refused(view, bad):
    kwargs = dict(eval_text=view.eval_text) | bad
    with pytest.raises((ValueError, TypeError)):
        TrainingView(view.tokenizer, view.train_ids, view.model_config, **kwargs)


def test_an_empty_prompt_gets_a_message_not_a_traceback(view):
    view.prompt.value = ""
    assert view.run() is None
    assert "prompt" in view.status.value and view.model is None


def test_mismatched_vocabulary_is_refused():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="vocab_size"):
        TrainingView(tok, [0, 1, 2], GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=1,
                                                 n_embd=8), eval_text="abcabc")


def test_trains_without_touching_the_global_seed_logic(view):
    torch.manual_seed(123)
    a = view.run()["train_loss"]
    torch.manual_seed(999)
    assert view.run()["train_loss"] == a
