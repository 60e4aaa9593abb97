"""A view of the shipped model's attention: a heatmap per layer and head for a typed sentence."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from course_lib.interpret import attention_maps, visible_piece


class AttentionView(widgets.VBox):
    """Type a sentence; see where each token (row) looks (columns) in one layer and head.

    One forward pass per new text (its maps are cached); moving `layer` or `head` only picks a
    slice. `tokens`, `weights` (T, T) and `figure` hold what is shown; `message` says what went
    wrong with the text, if anything.
    """

    def __init__(self, model, tokenizer, text: str = "To be, or not to be, that is the question",
                 max_tokens: int = 40):
        self.model, self.tokenizer = model, tokenizer
        self.max_tokens = min(max_tokens, model.config.block_size)
        self.text = widgets.Text(value=text, description="text", continuous_update=False,
                                 layout=widgets.Layout(width="600px"))
        self.layer = widgets.IntSlider(value=0, min=0, max=model.config.n_layer - 1,
                                       description="layer")
        self.head = widgets.IntSlider(value=0, min=0, max=model.config.n_head - 1,
                                      description="head")
        self.message = widgets.HTML()
        self.figure = go.FigureWidget(
            data=[go.Heatmap(z=[[0.0]], colorscale="Blues", zmin=0.0, zmax=1.0,
                             colorbar=dict(title="weight"))],
            layout=go.Layout(
                height=560, width=640, margin=dict(l=90, r=20, t=50, b=90),
                xaxis=dict(title="key: the token looked at", tickangle=-60),
                yaxis=dict(title="query: the token looking", autorange="reversed"),
            ),
        )
        self.tokens: list[str] = []
        self.weights = np.zeros((0, 0))
        self._maps = None

        self.text.observe(self._on_text, names="value")
        self.layer.observe(self._show, names="value")
        self.head.observe(self._show, names="value")
        self._on_text()
        super().__init__([self.text, widgets.HBox([self.layer, self.head]), self.message,
                          self.figure])

    def _on_text(self, change=None) -> None:
        text = self.text.value
        if not text.strip():
            self.message.value = _warn("Type a sentence first: the text box is empty.")
            return
        try:
            ids = self.tokenizer.encode(text)
        except ValueError as e:  # e.g. a character a small tokenizer has never seen
            self.message.value = _warn(f"This text cannot be tokenized: {e}")
            return
        note = ""
        if len(ids) > self.max_tokens:
            note = (f"That is {len(ids)} tokens; showing the last {self.max_tokens} "
                    "so the labels stay readable.")
            ids = ids[-self.max_tokens:]
        self._maps = attention_maps(self.model, ids).numpy()  # the one forward pass
        self.tokens = [visible_piece(self.tokenizer.decode([i])) for i in ids]
        self.message.value = _warn(note) if note else ""
        self._show()

    def _show(self, change=None) -> None:
        if self._maps is None:
            return
        layer, head = self.layer.value, self.head.value
        self.weights = self._maps[layer, head]
        T = len(self.tokens)
        labels = [f"{i}:{t}" for i, t in enumerate(self.tokens)]
        hover = [[f"{labels[q]} → {labels[k]}" for k in range(T)] for q in range(T)]
        with self.figure.batch_update():
            heat = self.figure.data[0]
            heat.z = self.weights
            heat.x = heat.y = list(range(T))
            heat.customdata = hover
            heat.hovertemplate = "%{customdata}<br>weight %{z:.3f}<extra></extra>"
            # Tick text by index, so a token that appears twice keeps two rows.
            for axis in (self.figure.layout.xaxis, self.figure.layout.yaxis):
                axis.tickmode = "array"
                axis.tickvals = list(range(T))
                axis.ticktext = self.tokens
            self.figure.layout.title = f"layer {layer}, head {head}: each row sums to 1"


def _warn(text: str) -> str:
    return f'<span style="color:#b3261e">{html.escape(text)}</span>'
