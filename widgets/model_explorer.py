"""The whole model at once: prompt, tokens, embeddings, blocks, final norm, logits, next token."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from course_lib.interpret import MODEL_STAGES, ModelTrace, model_trace, token_labels
from course_lib.model import GPT
from widgets.common import encode_text, guarded, message_box, note
from widgets.figure import FigureWidget

DEFAULT_TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\n"
PARTS = ("stream after the block", "attention adds", "MLP adds")
_MARGIN = dict(l=70, r=20, t=40, b=40)
_ACCENT, _BLUE = "#d62728", "#1f77b4"


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + " × ".join(str(d) for d in shape) + ")"


def _axis(labels: list[str], **extra) -> dict:
    # Numbered ticks carry the token text: two equal tokens must stay two rows.
    return dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels,
                tickfont=dict(size=10), **extra)


class ModelExplorer(widgets.VBox):
    """Type a prompt and see one forward pass of the whole model, stage by stage.

    `models` is a (model, tokenizer) pair or a dict of them by name (then `model_name` picks).
    Controls: `model_name` (Dropdown), `text` (Text), `stage` (ToggleButtons over
    MODEL_STAGES, each labelled with its live shape), `layer` (which block), `part` (what the
    block shows: the stream after it, or what its attention or MLP adds), `head` (whose
    attention is drawn).
    Shown data: `trace` (course_lib.interpret.ModelTrace, everything drawn), `diagram` (the
    pipeline with every stage's shape), `figure` (a heatmap of the chosen stage's vectors, or
    bars), `shown` (the array the figure draws), `attention_figure` (the chosen head),
    `lens_chart` (logit lens: the final top token's probability after each layer),
    `lens_rows` (the top tokens read off the stream after the chosen block), `detail` and
    `message`. A new prompt or model costs one forward pass; every other control costs none.
    """

    def __init__(self, models, text: str = DEFAULT_TEXT, max_tokens: int = 48, k: int = 8):
        if isinstance(models, tuple):
            models = {"model": models}
        if not isinstance(models, dict) or not models:
            raise TypeError("models must be a (model, tokenizer) pair or a dict of them by name")
        for name, pair in models.items():
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], GPT)):
                raise TypeError(f"models[{name!r}] must be a (GPT, tokenizer) pair")
        self.models = models
        self.max_tokens, self.k = max_tokens, k
        self.trace: ModelTrace | None = None
        self.shown = np.zeros((1, 1))
        self.lens_rows: list[tuple[str, float]] = []
        self._quiet = False

        self.model_name = widgets.Dropdown(options=list(models), description="model")
        if len(models) == 1:
            self.model_name.layout.display = "none"
        self.text = widgets.Text(value=text, description="prompt", continuous_update=False,
                                 layout=widgets.Layout(width="95%"))
        self.message = message_box()
        self.diagram = widgets.HTML()
        self.stage = widgets.ToggleButtons(options=[(s, s) for s in MODEL_STAGES],
                                           value="blocks", description="stage",
                                           style=dict(button_width="auto"))
        self.layer = widgets.IntSlider(0, min=0, max=1, description="block")
        self.part = widgets.Dropdown(options=PARTS, description="show")
        self.head = widgets.IntSlider(0, min=0, max=1, description="head")
        self.detail = widgets.HTML()
        self.lens_html = widgets.HTML()

        self.figure = go.Figure(
            data=[go.Heatmap(z=[[0.0]], colorscale="RdBu", zmid=0, reversescale=True,
                             colorbar=dict(thickness=12),
                             hovertemplate="token %{y}, dim %{x}: %{z:.3f}<extra></extra>"),
                  go.Bar(x=[0], y=[0.0], marker_color=_BLUE, visible=False)],
            layout=go.Layout(height=380, width=760, margin=_MARGIN, plot_bgcolor="white"),
        )
        self.attention_figure = go.Figure(
            data=[go.Heatmap(z=[[0.0]], zmin=0, zmax=1, colorscale="Blues",
                             colorbar=dict(thickness=12),
                             hovertemplate="query %{y} looks at key %{x}: %{z:.3f}"
                                           "<extra></extra>")],
            layout=go.Layout(height=380, width=420, margin=_MARGIN, plot_bgcolor="white",
                             xaxis_title="key (looked at)", yaxis_title="query (looking)"),
        )
        self.lens_chart = go.Figure(
            data=[go.Scatter(x=[0], y=[0.0], mode="lines+markers", line_color=_BLUE),
                  go.Scatter(x=[0], y=[0.0], mode="markers",
                             marker=dict(color=_ACCENT, size=12), showlegend=False)],
            layout=go.Layout(height=280, width=420, margin=_MARGIN, showlegend=False,
                             xaxis_title="after block (-1 = the embeddings)",
                             yaxis=dict(title="probability", range=[0, 1.02])),
        )

        self._load_model()
        # Build the widgets from figures that are already filled: a browser then receives
        # each whole, instead of a placeholder and a stream of updates.
        self._set_text()
        self.figure, self.attention_figure, self.lens_chart = (
            FigureWidget(f) for f in (self.figure, self.attention_figure, self.lens_chart)
        )

        self.block_panel = widgets.VBox([
            widgets.HBox([self.layer, self.part, self.head]),
            widgets.HBox([self.attention_figure,
                          widgets.VBox([self.lens_chart, self.lens_html])]),
        ])
        super().__init__([
            widgets.HBox([self.model_name]), self.text, self.message, self.diagram,
            self.stage, self.detail, self.figure, self.block_panel,
        ])
        self.block_panel.layout.display = None if self.stage.value == "blocks" else "none"

        self.model_name.observe(lambda _: self._change_model(), names="value")
        self.text.observe(lambda _: self._set_text(), names="value")
        for control in (self.stage, self.layer, self.part, self.head):
            control.observe(lambda _: self._show_stage(), names="value")

    # ----- the one forward pass --------------------------------------------------------------

    def _load_model(self) -> None:
        self.model, self.tokenizer = self.models[self.model_name.value]
        cfg = self.model.config
        self._quiet = True  # new slider ranges would redraw once per change
        try:
            self.layer.max, self.head.max = cfg.n_layer - 1, cfg.n_head - 1
            self.layer.value, self.head.value = cfg.n_layer - 1, 0
        finally:
            self._quiet = False

    def _change_model(self) -> None:
        self._load_model()
        self.trace = None  # the old model's trace must not be drawn with the new model's shape
        self._set_text()

    @guarded
    def _set_text(self) -> None:
        limit = min(self.max_tokens, self.model.config.block_size)
        ids, cut = encode_text(self.tokenizer, self.text.value, max_tokens=limit, what="prompt")
        self.trace = model_trace(self.model, self.tokenizer, ids, k=self.k)
        self.message.value = note((cut + " " if cut else "")
                                  + f"{len(ids)} tokens. Choose a stage to see what it holds.")
        self._show_stage()

    # ----- drawing: no forward pass ----------------------------------------------------------

    def _draw_diagram(self) -> None:
        tr, cfg = self.trace, self.model.config
        names = {"tokens": "tokens", "embeddings": "embeddings"
                 + (" + positions" if tr.position_embeddings is not None else ""),
                 "blocks": f"{cfg.n_layer} blocks", "final norm": "final norm",
                 "logits": "logits", "next token": "next token"}
        boxes = []
        for stage in MODEL_STAGES:
            on = stage == self.stage.value
            style = (f"border:2px solid {_ACCENT if on else '#999'};border-radius:6px;"
                     f"padding:4px 8px;text-align:center;background:{'#fdecea' if on else '#fff'}")
            sub = _shape_text(tr.shapes[stage])
            if stage == "blocks":
                sub += f"<br>block {self.layer.value}: attention {cfg.n_head} heads, MLP"
            boxes.append(f'<div style="{style}"><b>{html.escape(names[stage])}</b><br>'
                         f'<span style="font-family:monospace">{sub}</span></div>')
        arrow = '<div style="align-self:center;font-size:20px">&rarr;</div>'
        self.diagram.value = ('<div style="display:flex;gap:6px;flex-wrap:wrap">'
                              + arrow.join(boxes) + "</div>")
        chosen = self.stage.value
        self.stage.options = [(f"{s} {_shape_text(tr.shapes[s])}", s) for s in MODEL_STAGES]
        self.stage.value = chosen  # new options would otherwise select the first stage

    @guarded
    def _show_stage(self) -> None:
        if self._quiet or self.trace is None:
            return
        tr, stage = self.trace, self.stage.value
        self._quiet = True  # relabelling the stage buttons must not redraw again
        try:
            self._draw_diagram()
        finally:
            self._quiet = False
        block = stage == "blocks"
        if hasattr(self, "block_panel"):
            self.block_panel.layout.display = None if block else "none"
        if stage == "tokens":
            self._bars(list(range(len(tr.ids))), tr.ids, [f"{i}: {lab}" for i, lab in
                                                          enumerate(tr.labels)],
                       "token id at each position", "token id")
            rows = "".join(f"<tr><td>{i}</td><td><code>{html.escape(lab)}</code></td>"
                           f"<td>{t}</td></tr>" for i, (lab, t) in enumerate(zip(tr.labels,
                                                                                tr.ids,
                                                                                strict=True)))
            self.detail.value = ("<b>The prompt as token ids</b> (one per position):"
                                 "<table><tr><th>position</th><th>token</th><th>id</th></tr>"
                                 f"{rows}</table>")
        elif stage == "embeddings":
            self._heatmap(tr.residual[0].numpy(), "the residual stream before block 0")
            how = ("token embedding + position embedding (one row each of two tables)"
                   if tr.position_embeddings is not None else
                   "token embedding only: rotary positions act inside attention, on q and k")
            width = tr.shapes["embeddings"][1]
            self.detail.value = f"Each token becomes a vector of {width} numbers: {how}."
        elif block:
            layer, part = self.layer.value, self.part.value
            z = {PARTS[0]: tr.residual[layer + 1], PARTS[1]: tr.attn_out[layer],
                 PARTS[2]: tr.mlp_out[layer]}[part]
            self._heatmap(z.numpy(), f"block {layer}: {part}")
            self._show_block(layer)
        elif stage == "final norm":
            self._heatmap(tr.final_norm.numpy(), "the last stream after the final norm")
            self.detail.value = ("The final norm rescales every token's vector before the "
                                 "head reads it.")
        elif stage == "logits":
            last = tr.logits[-1]
            top = np.argsort(-last.numpy(), kind="stable")[: self.k]
            labels = token_labels(self.tokenizer, [int(i) for i in top])
            self._bars(list(range(len(top))), last[top].tolist(), labels,
                       "logits of the last position (largest)", "logit")
            vocab = tr.shapes["logits"][1]
            self.detail.value = (f"The head turns every position's vector into {vocab} "
                                 "scores, one per token of the vocabulary. Only the last "
                                 "position's row predicts the token after the prompt.")
        else:
            self._bars(list(range(len(tr.top))), [p for _, p in tr.top],
                       [t for t, _ in tr.top], "next-token probabilities (softmax of the "
                       "last logits)", "probability")
            best, p = tr.top[0]
            self.detail.value = (f"The most likely next token is <code>{html.escape(best)}"
                                 f"</code> with probability {p:.1%}.")

    def _heatmap(self, z: np.ndarray, title: str) -> None:
        self.shown = z
        lim = float(np.quantile(np.abs(z), 0.99)) or 1.0  # a few huge dims would wash out all
        with self.figure.batch_update():
            # Three decimals are more than a colour can show, and a third of the bytes to send.
            self.figure.data[0].update(z=np.round(z, 3).tolist(), zmin=-lim, zmax=lim,
                                       visible=True)
            self.figure.data[1].visible = False
            self.figure.layout.title = f"{title} {_shape_text(z.shape)}"
            self.figure.layout.yaxis = _axis(self.trace.labels, autorange="reversed",
                                             title="token")
            self.figure.layout.xaxis = dict(title="dimension", tickmode="auto")

    def _bars(self, x, y, labels, title: str, y_title: str) -> None:
        self.shown = np.asarray(y, dtype=float)
        with self.figure.batch_update():
            self.figure.data[0].visible = False
            self.figure.data[1].update(x=x, y=list(y), visible=True)
            self.figure.layout.title = title
            self.figure.layout.xaxis = _axis(labels)
            self.figure.layout.yaxis = dict(title=y_title, autorange=True)

    def _show_block(self, layer: int) -> None:
        tr = self.trace
        head = self.head.value
        T = len(tr.ids)
        weights = tr.attention[layer, head].numpy()
        shown = np.where(np.tril(np.ones((T, T), dtype=bool)), weights, np.nan)
        with self.attention_figure.batch_update():
            self.attention_figure.data[0].z = [[None if v != v else round(v, 3) for v in row]
                                               for row in shown.tolist()]
            self.attention_figure.layout.title = f"block {layer}, head {head}: attention"
            self.attention_figure.layout.xaxis = _axis(tr.labels, title="key (looked at)")
            self.attention_figure.layout.yaxis = _axis(tr.labels, autorange="reversed",
                                                       title="query (looking)")
        final_id = int(tr.probs.argmax())
        track = tr.lens[:, final_id].tolist()
        with self.lens_chart.batch_update():
            # x is the block number, as on the slider; the embeddings sit at -1
            self.lens_chart.data[0].x = list(range(-1, len(track) - 1))
            self.lens_chart.data[0].y = track
            self.lens_chart.data[1].x = [layer]
            self.lens_chart.data[1].y = [track[layer + 1]]
            self.lens_chart.layout.title = (f"logit lens: p({tr.top[0][0]!r}) after each block")
        self.lens_rows = tr.lens_top[layer + 1]
        rows = "".join(f"<tr><td><code>{html.escape(t)}</code></td><td>{p:.1%}</td></tr>"
                       for t, p in self.lens_rows)
        self.lens_html.value = (f"<b>Logit lens after block {layer}</b>: the stream at the last "
                                "token, read through the final norm and the head."
                                f"<table>{rows}</table>")
        attn = float(tr.attn_out[layer].norm(dim=-1).mean())
        mlp = float(tr.mlp_out[layer].norm(dim=-1).mean())
        stream = float(tr.residual[layer].norm(dim=-1).mean())
        self.detail.value = (f"Block {layer} reads the stream (mean length {stream:.2f} per "
                             f"token), and adds its attention (length {attn:.2f}) and its MLP "
                             f"(length {mlp:.2f}): x + attn(norm(x)), then x + mlp(norm(x)).")
