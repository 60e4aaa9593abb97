"""Train a small GPT live: learning rate and steps, a live loss curve, samples as it learns."""

from __future__ import annotations

import html
import math
import threading
import time

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from course_lib.evaluation import cross_entropy
from course_lib.model import GPT, GPTConfig
from course_lib.train import TrainConfig, sample_report, train_with_reports
from course_lib.validation import check_int, check_str
from widgets.common import note, warn
from widgets.figure import FigureWidget
from widgets.interrupt import install_interrupt_hook, stopped_by_interrupt

EARLIER_RUNS = 3  # how many earlier runs stay drawn, faintly, to compare with


class TrainingView(widgets.VBox):
    """Pick a learning rate and a number of steps, press Train, watch the loss fall.

    Each run trains a fresh model (the same seed, so runs differ only by the controls) through
    `course_lib.train.train_with_reports`; its callback feeds the plot. Ten times per run the
    held-out loss is measured on `eval_text` (text the model never trains on); at step 0,
    halfway and at the end a sample from `prompt` (same seed) and bits per character join it.
    `run()` trains in the calling thread; the Train button runs it in a background thread, so
    that the kernel stays free and `stop` (the Stop button) or an interrupt of the kernel
    (Kernel > Interrupt, or the toolbar's square; see widgets.interrupt) can end the run after
    the current step. After a run: `model`, `history`, `reports` (one dict per checkpoint),
    `figure` (train and held-out loss; traces 2 and on are the last EARLIER_RUNS runs' train
    loss, faint), `val_steps`/`val_losses` (the red curve) and `samples` (the HTML table shown).
    """

    def __init__(
        self,
        tokenizer,
        train_ids,
        model_config: GPTConfig,
        *,
        eval_text: str,
        prompt: str = "ROMEO:\n",
        learning_rate: float = 1e-2,
        steps: int = 400,
        batch_size: int = 8,
        sample_tokens: int = 40,
        seed: int = 0,
        device: str | None = None,
    ):
        if model_config.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"model_config.vocab_size ({model_config.vocab_size}) must equal the "
                             f"tokenizer's ({tokenizer.vocab_size})")
        check_str("eval_text", eval_text)
        check_str("prompt", prompt, allow_empty=True)
        steps = check_int("steps", steps, minimum=20, maximum=3000)
        batch_size = check_int("batch_size", batch_size, minimum=1, maximum=4096)
        sample_tokens = check_int("sample_tokens", sample_tokens, minimum=1, maximum=1000)
        if not (isinstance(learning_rate, (int, float)) and 1e-4 <= learning_rate <= 10 ** -0.5):
            raise ValueError(f"learning_rate must be a number in [1e-4, 0.316], got "
                             f"{learning_rate!r}")
        self.tokenizer, self.train_ids = tokenizer, torch.as_tensor(train_ids, dtype=torch.long)
        self.model_config, self.eval_text = model_config, eval_text
        self._eval_ids = tokenizer.encode(eval_text)
        self.batch_size, self.sample_tokens, self.seed = batch_size, sample_tokens, seed
        self.device = device

        self.learning_rate = widgets.FloatLogSlider(
            value=learning_rate, base=10, min=-4, max=-0.5, step=0.1, readout_format=".1e",
            description="learning rate", style={"description_width": "initial"})
        self.steps = widgets.IntSlider(value=steps, min=20, max=3000, step=20,
                                       description="steps")
        self.prompt = widgets.Text(value=prompt, description="sample from",
                                   style={"description_width": "initial"})
        self.start = widgets.Button(description="Train", button_style="primary", icon="play")
        self.stop = widgets.Button(description="Stop", icon="stop", disabled=True,
                                   tooltip="end the run after the current step "
                                           "(Kernel > Interrupt does the same)")
        self.progress = widgets.IntProgress(value=0, min=0, max=steps, description="step 0",
                                            layout=widgets.Layout(width="420px"))
        self.status = widgets.HTML()
        self.hint = widgets.HTML(note("Stop, or Kernel > Interrupt, ends a run after its "
                                      "current step."))
        self.samples = widgets.HTML()
        chance = math.log(model_config.vocab_size)
        self.figure = FigureWidget(
            data=[
                go.Scatter(x=[], y=[], mode="lines", name="train loss (one batch)",
                           line=dict(width=1, color="#1f77b4")),
                go.Scatter(x=[], y=[], mode="lines+markers", name="held-out loss",
                           line=dict(width=2, color="#d62728")),
                *(go.Scatter(x=[], y=[], mode="lines", name="earlier run", visible=False,
                             line=dict(width=1, color="#7f7f7f"), opacity=0.45 - 0.1 * i)
                  for i in range(EARLIER_RUNS)),
            ],
            layout=go.Layout(
                height=360, width=700, margin=dict(l=60, r=20, t=40, b=50),
                xaxis=dict(title="step", range=[0, steps]),
                yaxis=dict(title="cross-entropy (nats per token)"),
                title="loss while training",
                shapes=[dict(type="line", xref="paper", x0=0, x1=1, y0=chance, y1=chance,
                             line=dict(dash="dot", color="grey"))],
                annotations=[dict(xref="paper", x=1, y=chance, xanchor="right",
                                  yanchor="bottom", showarrow=False,
                                  text=f"ln(vocab) = {chance:.2f}: guessing uniformly")],
            ),
        )
        self.model: GPT | None = None
        self.history: dict[str, list] | None = None
        self.reports: list[dict] = []
        self._train_x: list[int] = []
        self._train_y: list[float] = []
        self.val_steps: list[int] = []
        self.val_losses: list[float] = []
        self._eval_every = 1
        self._last_draw = self._t0 = 0.0
        self._draw_every = 1
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._run_name = ""

        install_interrupt_hook()  # in a kernel, an interrupt calls request_stop() too
        self.start.on_click(lambda _: self.start_in_background())
        self.stop.on_click(lambda _: self.request_stop())
        super().__init__([
            widgets.HBox([self.learning_rate, self.steps]),
            widgets.HBox([self.prompt, self.start, self.stop, self.hint]),
            widgets.HBox([self.progress, self.status]),
            self.figure,
            self.samples,
        ])

    def start_in_background(self) -> threading.Thread | None:
        """What the Train button does: run() in a thread, so that Stop can reach it."""
        if self._thread is not None and self._thread.is_alive():
            return None  # one run at a time
        self._thread = threading.Thread(target=self.run, daemon=True, name="TrainingView")
        self._thread.start()
        return self._thread

    def request_stop(self) -> None:
        """End the current run after its current step (the Stop button; an interrupt too)."""
        self._stop_requested = True

    def run(self) -> dict[str, list] | None:
        """Train a fresh model with the current controls; returns its history (None on error).

        The run ends early, with what it has, when request_stop() is called meanwhile (by the
        Stop button, or by an interrupt of the kernel while it runs in the background; run in a
        cell, the interrupt also raises KeyboardInterrupt there, as in any cell).
        """
        prompt, steps = self.prompt.value, self.steps.value
        if not prompt:
            self.status.value = warn("Type a prompt to sample from first (the box is empty).")
            return None
        self._stop_requested = False
        for control in (self.learning_rate, self.steps, self.prompt, self.start):
            control.disabled = True
        try:
            with stopped_by_interrupt(self.request_stop):
                self.stop.disabled = False  # offered once an interrupt would stop the run too
                return self._train(prompt, steps)
        except KeyboardInterrupt:
            self.status.value = note("Interrupted: the run stopped before its end.")
            raise
        except Exception as e:  # shown in the view: a learner should never face a traceback
            self.status.value = warn(f"Training stopped: {e}")
            return None
        finally:
            for control in (self.learning_rate, self.steps, self.prompt, self.start):
                control.disabled = False
            self.stop.disabled = True

    def _train(self, prompt: str, steps: int) -> dict[str, list]:
        config = TrainConfig(
            max_steps=steps, batch_size=self.batch_size, learning_rate=self.learning_rate.value,
            min_lr=self.learning_rate.value / 10, warmup_steps=max(1, steps // 20),
            eval_interval=0, seed=self.seed,
            device=self.device, progress=False,
        )
        report = sample_report(self.tokenizer, prompt, self.eval_text,
                               max_new_tokens=self.sample_tokens, seed=self.seed)
        self._keep_as_earlier_run()
        self._run_name = f"lr {self.learning_rate.value:.1e}, {steps} steps"
        self._train_x, self._train_y, self.val_steps, self.val_losses = [], [], [], []
        self._eval_every = max(1, steps // 10)
        self._draw_every = max(1, steps // 40)
        self.reports = []
        self.progress.max, self.progress.value = steps, 0
        self.progress.description = "step 0"
        self.figure.layout.xaxis.range = [0, steps]
        self.samples.value = ""
        self.status.value = "measuring the untrained model..."
        self._t0 = time.perf_counter()
        self._draw()

        torch.manual_seed(self.seed)  # the same initial weights every run: only controls differ
        self.model = GPT(self.model_config)
        self.history, _ = train_with_reports(
            self.model, self.train_ids, None, config, report,
            report_at=[0, steps // 2, steps], callback=self._on_step,
        )
        self.model.eval()
        self.progress.value = len(self.history["step"])
        self.progress.description = f"step {len(self.history['step'])}"
        self._draw()
        elapsed = time.perf_counter() - self._t0
        done = len(self.history["step"])
        verb = "stopped" if self._stop_requested and done < steps else "done"
        final = (f", final train loss {self.history['train_loss'][-1]:.3f}"
                 if self.history["train_loss"] else "")
        self.status.value = f"{verb}: {done} steps in {elapsed:.1f} s{final}"
        return self.history

    def _keep_as_earlier_run(self) -> None:
        # The run on screen moves to the first faint trace; older ones shift along, the oldest
        # drops off. Comparing runs is the point of the lesson.
        if not self._train_x:
            return
        ghosts = self.figure.data[2:]
        with self.figure.batch_update():
            for newer, older in zip(reversed(ghosts[:-1]), reversed(ghosts[1:]), strict=True):
                older.x, older.y, older.name = newer.x, newer.y, newer.name
                older.visible = newer.visible
            ghosts[0].x, ghosts[0].y = list(self._train_x), list(self._train_y)
            ghosts[0].name, ghosts[0].visible = f"earlier: {self._run_name}", True

    def _on_step(self, info: dict) -> bool | None:
        step = info["step"]
        if "train_loss" in info:
            self._train_x.append(step)
            self._train_y.append(info["train_loss"])
        if "report" in info:
            self.val_steps.append(step)
            self.val_losses.append(info["report"]["val_loss"])
            self.reports.append(info["report"])
            self.samples.value = self._samples_html()
        elif step % self._eval_every == 0:
            # The same measure as the reports' val_loss, so the red curve is one quantity.
            self.val_steps.append(step)
            self.val_losses.append(cross_entropy(self.model, self._eval_ids))
        # Redraw a few times a second, and at most about 40 times a run however slow the machine:
        # each redraw sends the whole curve (a loaded machine's Run All sent 2.9 MB of them).
        now = time.perf_counter()
        due = now - self._last_draw > 0.3 and step % self._draw_every == 0
        if due or "report" in info:
            self.progress.value = step
            self.progress.description = f"step {step}"
            if "train_loss" in info:
                self.status.value = (f"loss {info['train_loss']:.3f}, "
                                     f"{info['tokens_per_s']:,.0f} tokens/s")
            self._draw()
            self._last_draw = now
        return False if self._stop_requested else None  # False ends train()'s loop

    def _draw(self) -> None:
        with self.figure.batch_update():
            # Four decimals are more than a curve shows, and a third of the bytes to send.
            self.figure.data[0].x = self._train_x
            self.figure.data[0].y = [round(v, 4) for v in self._train_y]
            self.figure.data[1].x = self.val_steps
            self.figure.data[1].y = [round(v, 4) for v in self.val_losses]

    def _samples_html(self) -> str:
        rows = "".join(
            f"<tr><td>{r['step']}</td><td>{r['val_loss']:.3f}</td>"
            f"<td>{r['bits_per_char']:.2f}</td>"
            f"<td style='text-align:left'><pre style='margin:0'>"
            f"{html.escape(self.prompt.value + r['sample'])}</pre></td></tr>"
            for r in self.reports
        )
        return ("<table><tr><th>step</th><th>held-out loss</th><th>bits/char</th>"
                f"<th style='text-align:left'>sample (same seed)</th></tr>{rows}</table>")

