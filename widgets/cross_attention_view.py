"""A view of a translator's cross-attention: where the decoder looks in the source while it
writes each target character, with sliders over decoder layer, head and the step being written."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from course_lib.seq2seq import Seq2Seq
from course_lib.translation import cross_attention_map
from course_lib.validation import check_str
from widgets.common import guarded, message_box
from widgets.figure import FigureWidget

_ROW = "#d62728"  # the outline of the row being written


def _label(token: str) -> str:
    return "·" if token == " " else token


class CrossAttentionView(widgets.VBox):
    """Type English number words; see the translator's cross-attention map.

    Rows are the decoder's steps (the French character each one writes), columns the English
    characters the encoder read. One translation and one forward pass per new text (cached);
    the `layer`, `head` and `step` sliders only pick a slice and move the outlined row.
    `source_tokens`, `written`, `weights` (T, S) and `figure` hold what is shown; `message`
    says what went wrong with the text, if anything.
    """

    def __init__(self, model: Seq2Seq, tokenizer, text: str = "ninety-seven"):
        if not isinstance(model, Seq2Seq):
            raise TypeError(f"model must be a course_lib Seq2Seq, got {type(model).__name__}")
        check_str("text", text, allow_empty=True)
        self.model, self.tokenizer = model, tokenizer
        c = model.config
        self.text = widgets.Text(value=text, description="English", continuous_update=False,
                                 placeholder="number words, then press Enter",
                                 layout=widgets.Layout(width="500px"))
        self.layer = widgets.IntSlider(value=c.n_decoder_layer - 1, min=0,
                                       max=c.n_decoder_layer - 1, description="layer",
                                       continuous_update=False)
        self.head = widgets.IntSlider(value=0, min=0, max=c.n_head - 1, description="head",
                                      continuous_update=False)
        self.step = widgets.IntSlider(value=0, min=0, max=0, description="step",
                                      continuous_update=False)
        self.translation = widgets.HTML()
        self.message = message_box()
        self.figure = FigureWidget(
            data=[go.Heatmap(z=[[0.0]], colorscale="Blues", zmin=0.0, zmax=1.0,
                             colorbar=dict(title="weight"))],
            layout=go.Layout(
                height=620, width=560, margin=dict(l=90, r=20, t=60, b=70),
                xaxis=dict(title="English character read (encoder output)"),
                yaxis=dict(title="French character being written", autorange="reversed"),
            ),
        )
        self.source_tokens: list[str] = []
        self.written: list[str] = []
        self.weights = np.zeros((0, 0))
        self._maps = None
        self.text.observe(self._on_text, names="value")
        for control in (self.layer, self.head, self.step):
            control.observe(self._show, names="value")
        self._on_text()
        super().__init__([self.text, widgets.HBox([self.layer, self.head, self.step]),
                          self.translation, self.message, self.figure])

    def _on_text(self, change=None) -> None:
        # Whatever goes wrong, the old text's map must not stay up as if it were this one's.
        self._maps, self.source_tokens, self.written = None, [], []
        self.weights = np.zeros((0, 0))
        self.message.value = self.translation.value = ""
        self._translate()
        if self._maps is None:
            with self.figure.batch_update():
                self.figure.data[0].z = [[None]]
                self.figure.layout.shapes = ()
                self.figure.layout.title = "no translation to show"

    @guarded
    def _translate(self) -> None:
        text = self.text.value.strip()
        if not text:
            raise ValueError("The English box is empty: type a number in words, like "
                             "ninety-seven.")
        found = cross_attention_map(self.model, self.tokenizer, text)  # the one forward pass
        self._maps = found["weights"].numpy()
        self.source_tokens, self.written = found["source_tokens"], found["written"]
        self.translation.value = (f"<b>{html.escape(text)}</b> → "
                                  f"<b>{html.escape(found['target'])}</b>")
        last = len(self.written) - 1
        with self.step.hold_trait_notifications():
            self.step.max = last
            self.step.value = min(self.step.value, last)
        self._show()

    def _show(self, change=None) -> None:
        if self._maps is None:
            return
        layer, head, step = self.layer.value, self.head.value, self.step.value
        self.weights = self._maps[layer, head]
        T, S = self.weights.shape
        cols = [_label(t) for t in self.source_tokens]
        rows = [_label(t) for t in self.written]
        hover = [[f"writing {i}:{rows[i]} reads {j}:{cols[j]}" for j in range(S)]
                 for i in range(T)]
        looked = int(self.weights[step].argmax())
        with self.figure.batch_update():
            heat = self.figure.data[0]
            heat.z = self.weights.tolist()
            heat.x, heat.y = list(range(S)), list(range(T))
            heat.customdata = hover
            heat.hovertemplate = "%{customdata}<br>weight %{z:.3f}<extra></extra>"
            for axis, labels, n in ((self.figure.layout.xaxis, cols, S),
                                    (self.figure.layout.yaxis, rows, T)):
                axis.tickmode = "array"
                axis.tickvals = list(range(n))
                axis.ticktext = labels
            self.figure.layout.shapes = [dict(
                type="rect", x0=-0.5, x1=S - 0.5, y0=step - 0.5, y1=step + 0.5,
                line=dict(color=_ROW, width=3))]
            self.figure.layout.title = (
                f"layer {layer}, head {head}, step {step}: writing {rows[step]!r}, "
                f"looks most at {looked}:{cols[looked]!r}")
