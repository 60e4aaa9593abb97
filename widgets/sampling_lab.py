"""The sampling lab: penalties, temperature, top-k, top-p and min-p on a real distribution."""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from course_lib.interpret import token_labels
from course_lib.sampling import (
    SamplingParams,
    describe_filtering,
    next_token_logits,
    stream_generate,
)
from course_lib.validation import check_int, check_str
from widgets.common import encode_text, guarded, message_box, note, parse_seed, pre, reported
from widgets.figure import FigureWidget

# top-p's settings, as exact floats: a FloatSlider's browser side snaps 0.9 to
# 0.9000000000000001 and sends that back, which can land after the kernel has moved on.
TOP_P_VALUES = [round(i / 100, 2) for i in range(1, 101)]
# The same for min-p and the penalties: exact values, each slider's "off" value among them.
MIN_P_VALUES = [round(i / 100, 2) for i in range(0, 101)]
REPETITION_VALUES = [round(0.5 + i / 20, 2) for i in range(51)]  # 0.5 to 3.0; 1 = off
PRESENCE_VALUES = [round(i / 10, 1) for i in range(-20, 21)]  # OpenAI's range, -2 to 2
FREQUENCY_VALUES = PRESENCE_VALUES


PENALTY_NOTE = note(
    "The penalties push down tokens already in the context: the bars apply them to the "
    "prompt's tokens, Generate to the prompt and the text so far. Order (as in transformers): "
    "penalties, temperature, top-k, top-p, min-p.")


class SamplingLab(widgets.VBox):
    """Type a prompt; see the model's next-token distribution before and after the filters.

    A new prompt costs one forward pass (its logits are cached); every slider only re-filters
    those logits. Grey bars: the model's probabilities at temperature 1, without penalties.
    Coloured bars: the distribution that is actually sampled from. Line: the cumulative
    probability that top-p cuts (dotted at p). `top_k` 0, `top_p` 1.0, `min_p` 0, repetition
    penalty 1 and presence and frequency penalties 0 mean "off".

    The penalties depend on the tokens already in the context: the bars show the next token's
    distribution after penalties given the prompt's tokens, and the tokens are ranked by it (a
    penalised token moves right; its grey bar keeps the model's own probability). Generate
    applies them to the growing sequence (prompt and new tokens), as course_lib.sampling's
    generation does; the order is transformers': penalties, temperature, top-k, top-p, min-p.
    Generate streams text with the chosen settings into `output`.
    Shown data: `summary` (course_lib.sampling.describe_filtering's dict), `labels`, `figure`,
    `stats` (entropy and tokens kept), `message` (what is wrong with the input, if anything)
    and `generated` (the text written by the last Generate).
    """

    def __init__(self, model, tokenizer, prompt: str = "ROMEO:\nO, she doth teach the",
                 n_shown: int = 20, max_new_tokens: int = 80):
        check_str("prompt", prompt, allow_empty=True)
        n_shown = check_int("n_shown", n_shown, minimum=1, maximum=100)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1, maximum=300)
        self.model, self.tokenizer, self.n_shown = model, tokenizer, n_shown
        wide = {"description_width": "initial"}
        self.prompt = widgets.Textarea(value=prompt, description="prompt",
                                       continuous_update=False,
                                       layout=widgets.Layout(width="600px", height="70px"))
        # Sliders apply on release: a drag would queue one redraw per pixel moved.
        self.temperature = widgets.FloatSlider(value=1.0, min=0.0, max=2.5, step=0.05,
                                               description="temperature", style=wide,
                                               continuous_update=False)
        self.top_k = widgets.IntSlider(value=0, min=0, max=100, description="top-k (0 = off)",
                                       style=wide, continuous_update=False)
        self.top_p = widgets.SelectionSlider(options=TOP_P_VALUES, value=1.0,
                                             description="top-p (1 = off)", style=wide,
                                             continuous_update=False)
        self.min_p = widgets.SelectionSlider(options=MIN_P_VALUES, value=0.0,
                                             description="min-p (0 = off)", style=wide,
                                             continuous_update=False)
        self.repetition_penalty = widgets.SelectionSlider(
            options=REPETITION_VALUES, value=1.0, description="repetition penalty (1 = off)",
            style=wide, continuous_update=False)
        self.presence_penalty = widgets.SelectionSlider(
            options=PRESENCE_VALUES, value=0.0, description="presence penalty (0 = off)",
            style=wide, continuous_update=False)
        self.frequency_penalty = widgets.SelectionSlider(
            options=FREQUENCY_VALUES, value=0.0, description="frequency penalty (0 = off)",
            style=wide, continuous_update=False)
        for control in (self.min_p, self.repetition_penalty, self.presence_penalty,
                        self.frequency_penalty):
            control.layout.width = "390px"  # two to a row, as wide as the plot: labels whole
        self.max_new_tokens = widgets.IntSlider(value=max_new_tokens, min=1, max=300,
                                                description="new tokens", style=wide)
        self.seed = widgets.Text(value="0", description="seed (blank = random)", style=wide,
                                 layout=widgets.Layout(width="230px"))
        self.generate_button = widgets.Button(description="Generate", button_style="primary",
                                              icon="play")
        self.message = message_box()
        self.stats = widgets.HTML()
        self.output = widgets.HTML()
        self.figure = FigureWidget(
            data=[
                go.Bar(x=[], y=[], name="model (temperature 1, no penalty)",
                       marker_color="#c7c7c7"),
                go.Bar(x=[], y=[], name="sampled from", marker_color="#1f77b4"),
                go.Scatter(x=[], y=[], name="cumulative (what top-p cuts)", mode="lines+markers",
                           line=dict(color="#ff7f0e"), yaxis="y2"),
            ],
            layout=go.Layout(
                height=400, width=780, barmode="group", margin=dict(l=60, r=60, t=70, b=80),
                # automargin: a long token's label grows the bottom margin instead of running
                # into the axis title.
                xaxis=dict(title="next token, most likely first", tickangle=-50,
                           tickmode="array", automargin=True),
                # The bars' axis fits what is shown, so that 0.01 to 0.03 are still visible;
                # the cumulative line has its own 0 to 1 axis on the right.
                yaxis=dict(title="probability", rangemode="tozero"),
                yaxis2=dict(title="cumulative", range=[0, 1.02], overlaying="y", side="right",
                            showgrid=False, tickmode="linear", tick0=0, dtick=0.25),
                legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"),
            ),
        )
        self.summary: dict | None = None
        self.labels: list[str] = []
        self.generated = ""
        self._logits = None
        self._ids: list[int] = []  # the prompt's tokens: what the penalties look at

        self.prompt.observe(self._on_prompt, names="value")
        for control in (self.temperature, self.top_k, self.top_p, self.min_p,
                        self.repetition_penalty, self.presence_penalty, self.frequency_penalty):
            control.observe(self._show, names="value")
        self.generate_button.on_click(lambda _: self.generate())
        self._on_prompt()
        super().__init__([
            self.prompt,
            widgets.HBox([self.temperature, self.top_k, self.top_p]),
            widgets.HBox([self.min_p, self.repetition_penalty]),
            widgets.HBox([self.presence_penalty, self.frequency_penalty]),
            widgets.HTML(PENALTY_NOTE),
            self.message,
            self.stats,
            self.figure,
            widgets.HBox([self.max_new_tokens, self.seed, self.generate_button]),
            self.output,
        ])

    def params(self) -> SamplingParams:
        """The sliders as one SamplingParams: temperature, top_k, top_p, min_p and
        repetition_penalty (None where off), presence_penalty and frequency_penalty (0 = off).
        Generate adds the number of tokens and the seed."""
        return SamplingParams(
            temperature=self.temperature.value,
            top_k=self.top_k.value or None,
            top_p=self.top_p.value if self.top_p.value < 1.0 else None,
            min_p=self.min_p.value or None,
            repetition_penalty=(self.repetition_penalty.value
                                if self.repetition_penalty.value != 1.0 else None),
            presence_penalty=self.presence_penalty.value,
            frequency_penalty=self.frequency_penalty.value,
        )

    @guarded
    def _on_prompt(self, change=None) -> None:
        ids, _ = encode_text(self.tokenizer, self.prompt.value, what="prompt")
        block = self.model.config.block_size
        self._logits = next_token_logits(self.model, ids)  # the one forward pass
        self._ids = ids
        self.message.value = note(
            f"The prompt is {len(ids)} tokens; the model sees only its last {block} "
            "(its block size).") if len(ids) > block else ""
        self._show()

    @guarded
    def _show(self, change=None) -> None:
        if self._logits is None:
            return
        params = self.params()
        # The same function Generate's first step amounts to: penalties on the prompt's tokens.
        self.summary = describe_filtering(self._logits, params, n=self.n_shown, context=self._ids)
        d = self.summary
        self.labels = token_labels(self.tokenizer, d["ids"])
        x = list(range(len(d["ids"])))
        with self.figure.batch_update():
            # Fit the bars' axis to the tallest bar shown, with room above it.
            top = max(max(d["before"]), max(d["after"]))
            self.figure.layout.yaxis.range = [0, min(1.02, 1.1 * top)]
            self.figure.data[0].x, self.figure.data[0].y = x, d["before"]
            self.figure.data[1].x, self.figure.data[1].y = x, d["after"]
            self.figure.data[2].x, self.figure.data[2].y = x, d["cumulative"]
            # Ticks by position, so two tokens that print alike still get two bars.
            self.figure.layout.xaxis.tickvals = x
            self.figure.layout.xaxis.ticktext = self.labels
            self.figure.layout.shapes = (
                [dict(type="line", xref="paper", yref="y2", x0=0, x1=1, y0=params.top_p,
                      y1=params.top_p,
                      line=dict(dash="dot", color="#ff7f0e"))]
                if params.top_p is not None else []
            )
        vocab = self._logits.numel()
        # max(0, .): a distribution on one token has entropy 0, which rounding error shows as -0.00
        self.stats.value = (
            f"entropy <b>{max(0.0, d['entropy_before']):.2f}</b> bits at temperature 1 &rarr; "
            f"<b>{max(0.0, d['entropy_after']):.2f}</b> bits after your settings; "
            f"<b>{d['kept']}</b> of {vocab} tokens can still be sampled "
            f"(top one: {html.escape(self.labels[0])}, p = {d['after'][0]:.3f})"
        )

    def generate(self) -> str | None:
        """Stream max_new_tokens tokens after the prompt into `output`; returns the new text,
        or None when the prompt or the seed is not usable (`message` says why)."""
        ids = seed = None
        with reported(self.message):
            ids, _ = encode_text(self.tokenizer, self.prompt.value, what="prompt")
            seed = parse_seed(self.seed.value)
            self.message.value = ""
        if ids is None or self.message.value:
            return None
        self.generate_button.disabled = True
        prompt_html = html.escape(self.prompt.value)
        self.generated = ""
        try:
            with reported(self.message):
                self._stream(ids, seed, prompt_html)
        finally:
            self.generate_button.disabled = False
        return self.generated

    def _stream(self, ids: list[int], seed: int | None, prompt_html: str) -> None:
        new: list[int] = []
        stream = stream_generate(self.model, ids, self.max_new_tokens.value, seed=seed,
                                 params=self.params())
        for token in stream:
            new.append(int(token[0]))
            # Decode the whole continuation each time: a character split across two byte
            # tokens then shows as soon as its second half arrives.
            self.generated = self.tokenizer.decode(new)
            self.output.value = pre(prompt_html + "<b>" + html.escape(self.generated) + "</b>")

