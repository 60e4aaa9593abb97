"""Train a small GPT live: learning rate and steps, a live loss curve, samples as it learns."""

from __future__ import annotations

import html
import math
import time

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from course_lib.evaluation import cross_entropy
from course_lib.model import GPT, GPTConfig
from course_lib.train import TrainConfig, sample_report, train_with_reports
from widgets.figure import FigureWidget


class TrainingView(widgets.VBox):
    """Pick a learning rate and a number of steps, press Train, watch the loss fall.

    Each run trains a fresh model (the same seed, so runs differ only by the controls) through
    `course_lib.train.train_with_reports`; its callback feeds the plot. Ten times per run the
    held-out loss is measured on `eval_text` (text the model never trains on); at step 0,
    halfway and at the end a sample from `prompt` (same seed) and bits per character join it.
    `run()` does what the button does. After a run: `model`, `history`, `reports` (one dict per
    checkpoint), `figure` (train and held-out loss), `val_steps`/`val_losses` (the red curve)
    and `samples` (the HTML table shown).
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
        self.progress = widgets.IntProgress(value=0, min=0, max=steps, description="step 0",
                                            layout=widgets.Layout(width="420px"))
        self.status = widgets.HTML()
        self.samples = widgets.HTML()
        chance = math.log(model_config.vocab_size)
        self.figure = FigureWidget(
            data=[
                go.Scatter(x=[], y=[], mode="lines", name="train loss (one batch)",
                           line=dict(width=1, color="#1f77b4")),
                go.Scatter(x=[], y=[], mode="lines+markers", name="held-out loss",
                           line=dict(width=2, color="#d62728")),
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

        self.start.on_click(lambda _: self.run())
        super().__init__([
            widgets.HBox([self.learning_rate, self.steps]),
            widgets.HBox([self.prompt, self.start]),
            widgets.HBox([self.progress, self.status]),
            self.figure,
            self.samples,
        ])

    def run(self) -> dict[str, list] | None:
        """Train a fresh model with the current controls; returns its history (None on error)."""
        prompt, steps = self.prompt.value, self.steps.value
        if not prompt:
            self.status.value = _warn("Type a prompt to sample from first (the box is empty).")
            return None
        for control in (self.learning_rate, self.steps, self.prompt, self.start):
            control.disabled = True
        try:
            return self._train(prompt, steps)
        except Exception as e:  # shown in the view: a learner should never face a traceback
            self.status.value = _warn(f"Training stopped: {e}")
            return None
        finally:
            for control in (self.learning_rate, self.steps, self.prompt, self.start):
                control.disabled = False

    def _train(self, prompt: str, steps: int) -> dict[str, list]:
        config = TrainConfig(
            max_steps=steps, batch_size=self.batch_size, learning_rate=self.learning_rate.value,
            min_lr=self.learning_rate.value / 10, warmup_steps=max(1, steps // 20),
            eval_interval=0, seed=self.seed,
            device=self.device, progress=False,
        )
        report = sample_report(self.tokenizer, prompt, self.eval_text,
                               max_new_tokens=self.sample_tokens, seed=self.seed)
        self._train_x, self._train_y, self.val_steps, self.val_losses = [], [], [], []
        self._eval_every = max(1, steps // 10)
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
        self.status.value = (f"done: {len(self.history['step'])} steps in {elapsed:.1f} s, "
                             f"final train loss {self.history['train_loss'][-1]:.3f}")
        return self.history

    def _on_step(self, info: dict) -> None:
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
        # Redraw a few times a second, not every step: each redraw sends the whole curve.
        now = time.perf_counter()
        if now - self._last_draw > 0.3 or "report" in info:
            self.progress.value = step
            self.progress.description = f"step {step}"
            if "train_loss" in info:
                self.status.value = (f"loss {info['train_loss']:.3f}, "
                                     f"{info['tokens_per_s']:,.0f} tokens/s")
            self._draw()
            self._last_draw = now

    def _draw(self) -> None:
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = self._train_x, self._train_y
            self.figure.data[1].x, self.figure.data[1].y = self.val_steps, self.val_losses

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


def _warn(text: str) -> str:
    return f'<span style="color:#b3261e">{html.escape(text)}</span>'
