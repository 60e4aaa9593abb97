"""A head explorer: one head's attention map, where a token looks, all heads, heads switched off."""

from __future__ import annotations

import html
import math

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from ipywidgets.widgets.widget_bool import ToggleButtonStyle

from course_lib.interpret import (
    attention_and_probs,
    compare_top_tokens,
    kl_divergence,
    next_token_probs_with_heads,
    tile_heads,
    token_labels,
)
from course_lib.model import GPT
from course_lib.tokenization import visible_piece
from course_lib.validation import check_int, check_str
from widgets.common import encode_text, guarded, message_box, note
from widgets.figure import FigureWidget

DEFAULT_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\nJULIET:\nO Romeo, Romeo! wherefore art thou"
)
_ON, _OFF = "#1f77b4", "#d62728"
_MARGIN = dict(l=60, r=20, t=40, b=60)
# Cells a causal map masks (a query cannot see later keys) show the plot's background: grey.
_MASKED = "#e6e6e6"
# More tick labels than this on one axis overlap: label every n-th token instead.
_MAX_TICKS = 24
# The most cells the "all heads" grid sends: SmolLM2's 270 heads at 48 tokens would be 650,000
# (about 2 MB of JSON), for maps of a few pixels a cell. Past it, the grid shows fewer tokens.
_GRID_CELLS = 100_000
_GRID_TAB = 1  # the tab that holds the grid


def _axis(labels: list[str], size: int = 9, **extra) -> dict:
    # Numbered ticks carry the token text: two equal tokens must stay two columns. On a long
    # text only every n-th token is labelled, so that the labels do not overlap.
    every = max(1, math.ceil(len(labels) / _MAX_TICKS))
    ticks = list(range(0, len(labels), every))
    return dict(tickmode="array", tickvals=ticks, ticktext=[labels[i] for i in ticks],
                tickfont=dict(size=size), **extra)


def _gaps(z: np.ndarray) -> list[list[float | None]]:
    # NaN cannot travel to the browser as JSON; None is plotly's blank cell. Rounded, because
    # a 2-D array travels as JSON text, 17 digits a cell unrounded.
    return [[None if v != v else round(v, 3) for v in row] for row in z.tolist()]


class HeadExplorer(widgets.VBox):
    """Type a text and explore every attention head of `model` on it.

    Controls: `text` (Textarea), `layer` and `head` (sliders), `token` (the query token, a
    dropdown), `switches` (one ToggleButton per head, `switches[layer][head]`; off = masked via
    head_mask) and `all_on` (a button).
    Shown data: `ids` and `labels` (the tokens), `maps` (n_layer, n_head, T, T), `row` (where the
    chosen token looks in the chosen head), `head_mask`, `probs` and `probs_off` (next-token
    probabilities with all heads on and with the switched-off heads masked), `top` (the rows
    of the before/after bar chart: (text, p_before, p_after)), `kl` and `message`.
    Figures: `heatmap` (one head), `row_chart`, `grid` (all heads, at most the last
    `grid_tokens` tokens; click one to pick it) and `prob_chart`.
    A new text costs one forward pass; a head switch costs one; sliders cost none. The grid
    is the heaviest figure (tens of thousands of cells): it is drawn when its tab is shown,
    not for a text nobody looks at in it.
    """

    def __init__(
        self, model: GPT, tokenizer, text: str = DEFAULT_TEXT, grid_tokens: int = 48
    ) -> None:
        if not isinstance(model, GPT):
            raise TypeError(f"model must be a course_lib GPT, got {type(model).__name__}")
        check_str("text", text, allow_empty=True)
        grid_tokens = check_int("grid_tokens", grid_tokens, minimum=2)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.n_layer, self.n_head = model.config.n_layer, model.config.n_head
        self.block_size = model.config.block_size
        self.ids: list[int] = []
        self.labels: list[str] = []
        self.maps = torch.zeros(self.n_layer, self.n_head, 1, 1)
        self.row = np.zeros(1)
        self.head_mask = torch.ones(self.n_layer, self.n_head)
        self.probs = self.probs_off = torch.zeros(1)
        self.top: list[tuple[str, float, float]] = []
        self.kl = 0.0
        self._gap = 1
        self.grid_tokens = grid_tokens
        self._grid_T = 0
        self._grid_stale = True  # the grid does not show the current text yet
        self.tabs = None
        self._resetting = self._quiet = False

        self.text = widgets.Textarea(
            value=text, description="Text", continuous_update=False,
            layout=widgets.Layout(width="95%", height="90px"),
        )
        self.message = message_box()
        # Update on release: a drag would queue one redraw of two figures per pixel moved.
        self.layer = widgets.IntSlider(0, min=0, max=self.n_layer - 1, description="layer",
                                       continuous_update=False)
        self.head = widgets.IntSlider(0, min=0, max=self.n_head - 1, description="head",
                                      continuous_update=False)
        self.token = widgets.Dropdown(description="token", options=[("", 0)])

        self.heatmap = go.Figure(
            data=[go.Heatmap(z=[[0.0]], zmin=0, zmax=1, colorscale="Blues",
                             colorbar=dict(title="weight", thickness=12),
                             hovertemplate="query %{y} looks at key %{x}: %{z:.3f}"
                                           "<extra></extra>")],
            layout=go.Layout(height=500, width=540, margin=_MARGIN, plot_bgcolor=_MASKED,
                             xaxis_title="key (looked at)", yaxis_title="query (looking)"),
        )
        self.row_chart = go.Figure(
            data=[go.Bar(x=[0], y=[0.0], marker_color=_ON,
                         hovertemplate="key %{x}: %{y:.3f}<extra></extra>")],
            layout=go.Layout(height=500, width=430, margin=_MARGIN,
                             yaxis=dict(title="attention weight", rangemode="tozero")),
        )
        tile = max(40, min(120, 2400 // self.n_layer))
        self.grid = go.Figure(
            # hoverinfo "none", not "skip": plotly sends no click events for a skipped trace.
            data=[go.Heatmap(z=[[0]], zmin=0, zmax=100, colorscale="Blues", showscale=False,
                             hoverinfo="none")],
            # A map 120 px square, smaller for a deep model, so that 30 layers fit a screen or two.
            layout=go.Layout(height=tile * self.n_layer + 60, width=tile * self.n_head + 80,
                             margin=dict(l=70, r=10, t=40, b=20), plot_bgcolor="white"),
        )
        self.prob_chart = go.Figure(
            data=[go.Bar(name="all heads on", x=[0], y=[0.0], marker_color=_ON),
                  go.Bar(name="chosen heads off", x=[0], y=[0.0], marker_color=_OFF)],
            layout=go.Layout(height=340, width=700, margin=_MARGIN, barmode="group",
                             yaxis_title="probability of the next token",
                             legend=dict(orientation="h", y=1.12)),
        )

        # One layout and one style shared by every switch: each is a widget of its own, and
        # one per switch would be hundreds of messages to the browser on a deep model.
        switch_layout, switch_style = widgets.Layout(width="80px"), ToggleButtonStyle()
        self.switches = [
            [widgets.ToggleButton(value=True, description=f"head {h}",
                                  tooltip=f"layer {layer}, head {h}: click to switch off",
                                  button_style="info", layout=switch_layout, style=switch_style)
             for h in range(self.n_head)]
            for layer in range(self.n_layer)
        ]
        self.all_on = widgets.Button(description="all heads on", icon="refresh")
        self.kl_label = widgets.HTML()

        # Fill the figures before they become widgets, so that a browser receives each one
        # whole, in one message, instead of a placeholder followed by a stream of updates.
        self._set_text()
        self.heatmap, self.row_chart, self.grid, self.prob_chart = (
            FigureWidget(f) for f in (self.heatmap, self.row_chart, self.grid, self.prob_chart)
        )
        self.grid.data[0].on_click(self._on_grid_click)

        switch_rows = [
            widgets.HBox([widgets.Label(f"layer {layer}", layout=widgets.Layout(width="60px")),
                          *row])
            for layer, row in enumerate(self.switches)
        ]
        one_head = widgets.VBox([
            widgets.HBox([self.layer, self.head, self.token]),
            widgets.HBox([self.heatmap, self.row_chart]),
        ])
        heads_off = [
            widgets.HTML("Switch heads off (they then add nothing to the residual stream) "
                         "and watch the prediction for the next token change."),
            *switch_rows, self.all_on, self.kl_label, self.prob_chart,
        ]
        # A browser draws every tab's content as soon as the view appears, hidden or not: the
        # other two tabs get theirs when first shown, and the view appears in half the time.
        tabs = widgets.Tab(children=[one_head, widgets.VBox(), widgets.VBox()],
                           titles=("one head", "all heads", "switch heads off"))
        self._unshown_tabs = {_GRID_TAB: [self.grid], 2: heads_off}
        self.tabs = tabs
        super().__init__([self.text, self.message, tabs])
        tabs.observe(lambda _: self._on_tab(), names="selected_index")

        self.text.observe(lambda _: self._set_text(), names="value")
        for control in (self.layer, self.head, self.token):
            control.observe(lambda _: self._show_head(), names="value")
        for row in self.switches:
            for switch in row:
                switch.observe(lambda _: self._switched(), names="value")
        self.all_on.on_click(lambda _: self.reset_heads())

    # ----- text: the one forward pass with attention weights ---------------------------------

    @guarded
    def _set_text(self) -> None:
        ids, cut = encode_text(self.tokenizer, self.text.value, max_tokens=self.block_size)
        self.ids = ids
        self.labels = token_labels(self.tokenizer, ids)
        self.maps, self.probs = attention_and_probs(self.model, ids)
        self.message.value = note(
            (cut + " " if cut else "")
            + f"{len(ids)} tokens. Edit the text, then click outside the box to apply it.")
        T = len(ids)
        self._quiet = True  # new options would redraw the head once per change
        try:
            self.token.options = [(f"{i}: {lab}", i) for i, lab in enumerate(self.labels)]
            self.token.value = T - 1
        finally:
            self._quiet = False
        self._grid_stale = True
        self._show_head()
        self._show_grid_if_seen()
        self._show_probs(self._masked_probs())

    # ----- one head, and where one token looks -------------------------------------------------

    def _show_head(self) -> None:
        if self._quiet or not self.ids:
            return
        layer, head = self.layer.value, self.head.value
        q = min(int(self.token.value or 0), len(self.ids) - 1)
        weights = self.maps[layer, head].numpy()
        T = weights.shape[0]
        self.row = weights[q, : q + 1].copy()
        shown = np.where(np.tril(np.ones((T, T), dtype=bool)), weights, np.nan)
        with self.heatmap.batch_update():
            self.heatmap.data[0].z = _gaps(shown)
            self.heatmap.layout.title = f"layer {layer}, head {head}"
            self.heatmap.layout.xaxis = _axis(self.labels, title="key (looked at)")
            self.heatmap.layout.yaxis = _axis(self.labels, title="query (looking)",
                                              autorange="reversed")
            self.heatmap.layout.shapes = [dict(type="rect", x0=-0.5, x1=T - 0.5, y0=q - 0.5,
                                               y1=q + 0.5, line=dict(color=_OFF, width=2))]
        with self.row_chart.batch_update():
            self.row_chart.data[0].x = list(range(q + 1))
            self.row_chart.data[0].y = self.row
            self.row_chart.layout.xaxis = _axis(self.labels[: q + 1], title="key")
            self.row_chart.layout.title = (f"where {self.labels[q]!r} (token {q}) looks "
                                           f"in layer {layer}, head {head}")
        self._outline_grid()

    # ----- every head at once ------------------------------------------------------------------

    def _on_tab(self) -> None:
        content = self._unshown_tabs.pop(self.tabs.selected_index, None)
        if content is not None:
            self.tabs.children[self.tabs.selected_index].children = content
        self._show_grid_if_seen()

    def _show_grid_if_seen(self) -> None:
        if self._grid_stale and self.ids and self.tabs is not None \
                and self.tabs.selected_index == _GRID_TAB:
            self._show_grid()

    def _show_grid(self) -> None:
        self._grid_stale = False
        # Past grid_tokens tokens a map would be smaller than a pixel a cell: show the end.
        fit = max(2, math.isqrt(_GRID_CELLS // (self.n_layer * self.n_head)) - self._gap)
        T = self._grid_T = min(len(self.ids), self.grid_tokens, fit)
        step = T + self._gap
        title = "every head (click one to explore it)"
        if T < len(self.ids):
            title = f"every head, last {T} tokens (click one to explore it)"
        with self.grid.batch_update():
            # In whole percent, blanks as 0 (white in Blues): the grid is for seeing patterns and
            # clicking, and as JSON text its 50,000 cells then take 110 kB instead of 1.1 MB.
            tiles = tile_heads(self.maps[..., -T:, -T:], self._gap).numpy()
            self.grid.data[0].z = np.rint(np.nan_to_num(tiles) * 100).astype(int).tolist()
            self.grid.layout.title = title
            self.grid.layout.xaxis = dict(tickmode="array", showgrid=False, zeroline=False,
                                          tickvals=[h * step + (T - 1) / 2
                                                    for h in range(self.n_head)],
                                          ticktext=[f"head {h}" for h in range(self.n_head)],
                                          side="top")
            self.grid.layout.yaxis = dict(tickmode="array", showgrid=False, zeroline=False,
                                          autorange="reversed",
                                          tickvals=[la * step + (T - 1) / 2
                                                    for la in range(self.n_layer)],
                                          ticktext=[f"layer {la}" for la in range(self.n_layer)])
        self._outline_grid()

    def _outline_grid(self) -> None:
        if self._grid_stale:
            return  # drawn with the grid, when its tab is shown
        T = self._grid_T
        x0, y0 = self.head.value * (T + self._gap) - 0.5, self.layer.value * (T + self._gap) - 0.5
        self.grid.layout.shapes = [dict(type="rect", x0=x0, x1=x0 + T, y0=y0, y1=y0 + T,
                                        line=dict(color=_OFF, width=2))]

    def _on_grid_click(self, trace, points, state) -> None:
        if points.xs:
            self.select_head_at(points.xs[0], points.ys[0])

    def select_head_at(self, x: float, y: float) -> None:
        """Pick the head whose map holds grid cell (x, y), and show it in the first tab."""
        step = self._grid_T + self._gap
        layer, head = int(y // step), int(x // step)
        if 0 <= layer < self.n_layer and 0 <= head < self.n_head:
            self.layer.value, self.head.value = layer, head
            self.tabs.selected_index = 0

    # ----- heads switched off: one forward pass per switch -------------------------------------

    def _switched(self) -> None:
        if self._resetting:
            return
        for row in self.switches:
            for switch in row:
                switch.button_style = "info" if switch.value else "danger"
        if not self.ids:
            return  # no text yet: the mask is used as soon as there is one
        self._show_probs(self._masked_probs())

    def _masked_probs(self) -> torch.Tensor:
        self.head_mask = torch.tensor(
            [[float(s.value) for s in row] for row in self.switches]
        )
        if bool(self.head_mask.all()):
            return self.probs  # nothing is off: the full model's answer, no pass needed
        return next_token_probs_with_heads(self.model, self.ids, self.head_mask)

    def reset_heads(self) -> None:
        """Switch every head back on, with one update rather than one per button."""
        self._resetting = True
        try:
            for row in self.switches:
                for switch in row:
                    switch.value = True
        finally:
            self._resetting = False
        self._switched()

    def _show_probs(self, probs_off: torch.Tensor) -> None:
        self.probs_off = probs_off
        self.top = compare_top_tokens(self.probs, probs_off, self.tokenizer, k=10)
        self.kl = kl_divergence(self.probs, probs_off)
        labels = [visible_piece(text) for text, _, _ in self.top]
        n_off = int((self.head_mask == 0).sum())
        x = list(range(len(self.top)))
        with self.prob_chart.batch_update():
            self.prob_chart.data[0].x = x
            self.prob_chart.data[0].y = [b for _, b, _ in self.top]
            self.prob_chart.data[1].x = x
            self.prob_chart.data[1].y = [a for _, _, a in self.top]
            self.prob_chart.data[1].name = f"{n_off} head{'s' * (n_off != 1)} off"
            self.prob_chart.layout.xaxis = _axis(labels, size=12, title="next token")
        before = int(self.probs.argmax())
        after = int(probs_off.argmax())

        def show(i: int) -> str:
            return html.escape(repr(self.tokenizer.decode([i])))

        self.kl_label.value = (
            f"{n_off} of {self.n_layer * self.n_head} heads off. Most likely next token: "
            f"{show(before)} ({self.probs[before]:.1%}) with every head, "
            f"{show(after)} ({probs_off[after]:.1%}) now. "
            f"KL divergence from the full model: {self.kl:.3f} nats."
        )
