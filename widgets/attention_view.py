"""A view of the shipped model's attention: a heatmap per layer and head for a typed sentence."""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from course_lib.interpret import attention_maps, token_labels
from course_lib.model import GPT
from course_lib.validation import check_int, check_str
from widgets.common import encode_text, guarded, message_box, note
from widgets.figure import FigureWidget

_MASKED = "#e6e6e6"  # the plot background, seen through the masked (blank) cells
_MAX_TICKS = 24  # more labels than this on an axis overlap


class AttentionView(widgets.VBox):
    """Type a sentence; see where each token (row) looks (columns) in one layer and head.

    One forward pass per new text (its maps are cached); moving `layer` or `head` only picks a
    slice. `tokens`, `weights` (T, T) and `figure` hold what is shown; `message` says what went
    wrong with the text, if anything.
    """

    def __init__(self, model, tokenizer, text: str = "To be, or not to be, that is the question",
                 max_tokens: int = 40):
        if not isinstance(model, GPT):
            raise TypeError(f"model must be a course_lib GPT, got {type(model).__name__}")
        check_str("text", text, allow_empty=True)
        max_tokens = check_int("max_tokens", max_tokens, minimum=1)
        self.model, self.tokenizer = model, tokenizer
        self.max_tokens = min(max_tokens, model.config.block_size)
        # A Text box applies its value on Enter (or on leaving the box), as the placeholder says.
        self.text = widgets.Text(value=text, description="text", continuous_update=False,
                                 placeholder="type a sentence, then press Enter",
                                 layout=widgets.Layout(width="600px"))
        # Update on release: picking a slice is cheap, but a drag would queue a redraw per pixel.
        self.layer = widgets.IntSlider(value=0, min=0, max=model.config.n_layer - 1,
                                       description="layer", continuous_update=False)
        self.head = widgets.IntSlider(value=0, min=0, max=model.config.n_head - 1,
                                      description="head", continuous_update=False)
        self.message = message_box()
        self.figure = FigureWidget(
            data=[go.Heatmap(z=[[0.0]], colorscale="Blues", zmin=0.0, zmax=1.0,
                             colorbar=dict(title="weight"))],
            layout=go.Layout(
                height=560, width=640, margin=dict(l=90, r=20, t=50, b=90),
                plot_bgcolor=_MASKED,
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
        # Whatever goes wrong, the old sentence's map must not stay up as if it were this one's.
        self._maps, self.tokens, self.weights = None, [], np.zeros((0, 0))
        self._draw_text()
        if self._maps is None:
            with self.figure.batch_update():
                self.figure.data[0].z = [[None]]
                self.figure.layout.title = "no text to show"

    @guarded
    def _draw_text(self) -> None:
        ids, cut = encode_text(self.tokenizer, self.text.value, max_tokens=self.max_tokens,
                               what="sentence")
        self._maps = attention_maps(self.model, ids).numpy()  # the one forward pass
        self.tokens = token_labels(self.tokenizer, ids)
        self.message.value = note(cut + " (so the labels stay readable)") if cut else ""
        self._show()

    def _show(self, change=None) -> None:
        if self._maps is None:
            return
        layer, head = self.layer.value, self.head.value
        self.weights = self._maps[layer, head]
        T = len(self.tokens)
        labels = [f"{i}:{t}" for i, t in enumerate(self.tokens)]
        hover = [[f"{labels[q]} → {labels[k]}" for k in range(T)] for q in range(T)]
        # Masked cells (a query cannot see later keys) are left blank: the grey background.
        shown = np.where(np.tril(np.ones((T, T), dtype=bool)), self.weights, np.nan)
        with self.figure.batch_update():
            heat = self.figure.data[0]
            heat.z = [[None if v != v else v for v in row] for row in shown.tolist()]
            heat.x = heat.y = list(range(T))
            heat.customdata = hover
            heat.hovertemplate = "%{customdata}<br>weight %{z:.3f}<extra></extra>"
            # Tick text by index, so a token that appears twice keeps two rows; on a long text
            # every n-th token only, so the labels do not overlap.
            ticks = list(range(0, T, max(1, math.ceil(T / _MAX_TICKS))))
            for axis in (self.figure.layout.xaxis, self.figure.layout.yaxis):
                axis.tickmode = "array"
                axis.tickvals = ticks
                axis.ticktext = [self.tokens[i] for i in ticks]
            self.figure.layout.title = f"layer {layer}, head {head}: each row sums to 1"

