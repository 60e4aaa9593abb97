"""TrainingView: a run trains, plots both losses, reports at 0, N/2 and N; controls matter."""

import ast
import html
import json
import math
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from course_lib.model import GPTConfig
from course_lib.tokenization import CharTokenizer
from widgets.training_view import TrainingView

ROOT = Path(__file__).resolve().parent.parent
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


def test_outside_a_kernel_sigint_is_left_alone(view):
    from widgets.interrupt import install_interrupt_hook

    before = signal.getsignal(signal.SIGINT)
    TrainingView(view.tokenizer, view.train_ids, view.model_config, eval_text=view.eval_text)
    assert install_interrupt_hook() is False and signal.getsignal(signal.SIGINT) is before
    assert "Stop, or Kernel > Interrupt, ends a run" in html.unescape(view.hint.value)


class _Kernel:
    """A real ipykernel (the installed python3 kernel) in the project root, driven as Lab does."""

    def __init__(self, km, kc) -> None:
        self.km, self.kc = km, kc

    def run(self, code: str, timeout: float = 300) -> dict:
        """Execute `code`; return {"reply": execute_reply content, "stdout": text}."""
        out = []

        def keep(msg):
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=keep)
        return {"reply": reply["content"], "stdout": "".join(out)}

    def start(self, code: str, until: str, timeout: float = 300) -> str:
        """Send `code`; return its msg_id once it is busy: some text it printed, or a widget
        update it sent, contains `until`."""
        # stop_on_error=False: else the kernel may abort the next request, sent right after
        # this one's KeyboardInterrupt, as queued behind an error.
        msg_id = self.kc.execute(code, stop_on_error=False)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if (msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] in ("stream", "comm_msg")
                    and until in json.dumps(msg["content"])):
                return msg_id

    def reply_to(self, msg_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]


@pytest.fixture
def kernel():
    jupyter_client = pytest.importorskip("jupyter_client")
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(ROOT), env=dict(os.environ, OMP_NUM_THREADS="1"))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        yield _Kernel(km, kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


START_A_RUN = """
th = view.start_in_background()
while not view.reports and th.is_alive():  # the step-0 report: the training loop has begun
    time.sleep(0.05)
print("running", th.is_alive())
"""
STOPPED = """
th.join(timeout=240)
print(repr((th.is_alive(), view.status.value, running_jobs())))
"""


def test_kernel_interrupt_stops_a_background_run_and_still_interrupts_cells(kernel):
    setup = kernel.run(f"""
import signal, time
from course_lib.model import GPTConfig
from course_lib.tokenization import CharTokenizer
from widgets.interrupt import running_jobs
from widgets.training_view import TrainingView
TEXT = {TEXT!r}
tok = CharTokenizer.from_text(TEXT)
config = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32)
view = TrainingView(tok, tok.encode(TEXT), config, eval_text=TEXT[:300], prompt="to ",
                    steps=3000, batch_size=8, sample_tokens=10, device="cpu")
""" + START_A_RUN)
    assert setup["reply"]["status"] == "ok", setup
    assert setup["stdout"].strip() == "running True"

    # Interrupted while idle (the run is in its thread): the run stops, nothing else happens.
    kernel.km.interrupt_kernel()
    after = kernel.run(STOPPED)
    assert after["reply"]["status"] == "ok" and after["stdout"], after
    alive, status, jobs = ast.literal_eval(after["stdout"])
    assert not alive and jobs == 0  # the thread ended and left the registry
    steps = int(re.fullmatch(r"stopped: (\d+) steps in .*", status).group(1))
    assert 0 < steps < 3000
    assert kernel.run("print(1 + 1)")["stdout"] == "2\n"  # the kernel still runs cells

    # Interrupted while a cell is busy: KeyboardInterrupt there, as always, and the run stops.
    assert kernel.run(START_A_RUN)["stdout"].strip() == "running True"
    busy = kernel.start("print('sleeping', flush=True); time.sleep(30)", "sleeping")
    kernel.km.interrupt_kernel()
    reply = kernel.reply_to(busy)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    after = kernel.run(STOPPED)
    assert after["reply"]["status"] == "ok" and after["stdout"], after
    alive, status, jobs = ast.literal_eval(after["stdout"])
    assert not alive and status.startswith("stopped: ") and jobs == 0

    # With no run going, an interrupt of a busy cell is the plain KeyboardInterrupt.
    busy = kernel.start("print('sleeping', flush=True); time.sleep(30)", "sleeping")
    kernel.km.interrupt_kernel()
    reply = kernel.reply_to(busy)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert kernel.run("print(view.history is not None)")["stdout"] == "True\n"

    # A run in the cell itself (as lesson 8 does): KeyboardInterrupt there, the view says so
    # and offers Train again.
    busy = kernel.start("view.run()", "measuring the untrained model")
    kernel.km.interrupt_kernel()
    reply = kernel.reply_to(busy)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    after = kernel.run("print(repr((view.status.value, view.start.disabled, view.stop.disabled,"
                       " running_jobs())))")
    status, start_disabled, stop_disabled, jobs = ast.literal_eval(after["stdout"])
    assert "Interrupted" in status and not start_disabled and stop_disabled and jobs == 0
