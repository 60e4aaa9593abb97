"""Explore embeddings on a 2-D or 3-D PCA map: sentences (MiniLM) or our GPT's token table."""

from __future__ import annotations

import html
import math
import time
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from course_lib.embeddings import embed, load_sentence_model, nearest, pca
from course_lib.tokenization import token_pieces, visible_piece
from widgets.common import MAX_TEXT_CHARS, guarded, message_box
from widgets.figure import FigureWidget

__all__ = ["DEFAULT_SENTENCES", "DEFAULT_WORDS", "EmbeddingView"]

DEFAULT_SENTENCES = [
    "The king is strong",
    "The queen is powerful",
    "The prince will inherit the throne",
    "Apple is a fruit",
    "Bananas and oranges are sweet",
    "I ate a crisp green apple",
    "Apple released iPhone 17",
    "My laptop needs a software update",
    "The new phone has a better camera",
    "The dog chased the ball",
    "Cats sleep most of the day",
    "It is raining again this morning",
    "Tomorrow will be sunny and warm",
]

# Words from the plays, in groups a reader can recognise on the map; those that are not a
# single token in the given tokenizer are left out.
DEFAULT_WORDS = [
    " king", " queen", " prince", " duke", " lord", " lady",
    " father", " mother", " son", " daughter", " brother", " sister",
    " love", " hate", " fear", " joy", " grief",
    " one", " two", " three", " four", " ten",
    " day", " night", " morning", " sun", " moon",
    " sword", " blood", " war", " peace",
    " thee", " thou", " you", " he", " she",
]

_SELECTED, _NEIGHBOUR, _OTHER = "#d62728", "#ff7f0e", "#1f77b4"
_LABEL_CHARS = 28


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "\u2026"


def _padded(values: np.ndarray, fraction: float) -> list[float]:
    low, high = float(values.min()), float(values.max())
    pad = fraction * (high - low or 1.0)
    return [low - pad, high + pad]


class _Collection:
    """The items on one map: their labels and their vectors, row by row."""

    def __init__(self, labels: list[str], vectors: torch.Tensor) -> None:
        self.labels = labels
        self.vectors = vectors

    def add(self, label: str, vector: torch.Tensor) -> None:
        self.labels.append(label)
        self.vectors = torch.cat([self.vectors, vector[None]])


class EmbeddingView(widgets.VBox):
    """A PCA map of embeddings with a nearest-neighbours list for the selected item.

    Modes: "sentences" (all-MiniLM-L6-v2 vectors of `sentences`; the text box adds a sentence)
    and "tokens" (rows of `gpt`'s token embedding table for `words`; the text box adds a word,
    and the neighbours are searched over the whole vocabulary).
    Controls: `mode`, `dims` (2 or 3), `selected` (a label), `new_text` and `add_button`.
    Shown data: `figure` (plotly FigureWidget), `labels`, `coords` (n, dims),
    `explained` (variance ratio per axis), `neighbours` ((label, cosine) pairs), `message`.
    """

    def __init__(
        self,
        sentences: list[str] | None = None,
        sentence_model: Any = None,
        gpt: torch.nn.Module | None = None,
        tokenizer: Any = None,
        words: list[str] | None = None,
        k: int = 5,
        mode: str | None = None,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if (gpt is None) != (tokenizer is None):
            raise ValueError("tokens mode needs both gpt and tokenizer (or neither)")
        self.k = k
        self._collections: dict[str, _Collection] = {}
        self._sentence_model = None
        self._tokenizer = tokenizer
        self._wte: torch.Tensor | None = None

        if sentences is not None or gpt is None:
            sentences = list(dict.fromkeys(sentences or DEFAULT_SENTENCES))
            if len(sentences) < 3:
                raise ValueError(f"sentences must hold at least 3 texts, got {len(sentences)}")
            self._sentence_model = (sentence_model if sentence_model is not None
                                    else load_sentence_model())
            vectors = embed(sentences, self._sentence_model)
            self._collections["sentences"] = _Collection(sentences, vectors)
        if gpt is not None:
            self._wte = gpt.transformer.wte.weight.detach().float().cpu()
            ids = []
            for word in words if words is not None else DEFAULT_WORDS:
                token = tokenizer.encode(word)
                if len(token) == 1 and token[0] not in ids:
                    ids.append(token[0])
            if len(ids) < 3:
                raise ValueError("words must hold at least 3 words that are single tokens")
            labels = [self._token_text(i) for i in ids]
            self._token_ids = ids
            self._collections["tokens"] = _Collection(labels, self._wte[ids])

        names = {"sentences": "sentences (MiniLM)", "tokens": "tokens (our GPT's table)"}
        modes = list(self._collections)
        if mode is not None and mode not in modes:
            raise ValueError(f"mode must be one of {modes}, got {mode!r}")
        self.mode = widgets.ToggleButtons(
            options=[(names[m], m) for m in modes], value=mode or modes[0], description="Embed:",
            style={"button_width": "auto"},  # labels whole, not cut off mid-word
        )
        self.dims = widgets.ToggleButtons(options=[("2-D", 2), ("3-D", 3)], description="Map:",
                                          style={"button_width": "auto"})
        self.selected = widgets.Dropdown(description="Selected:",
                                         layout=widgets.Layout(width="330px"))
        self.new_text = widgets.Text(continuous_update=False,
                                     layout=widgets.Layout(width="340px"))
        self.add_button = widgets.Button(description="Add", button_style="primary")
        self.message = message_box()
        self.neighbour_list = widgets.HTML()
        self.legend = widgets.HTML(
            "<span style='font-size:12px'>"
            + " &nbsp; ".join(f"<span style='color:{colour}'>&#9679;</span> {name}"
                              for colour, name in ((_SELECTED, "selected"),
                                                   (_NEIGHBOUR, "nearest neighbours"),
                                                   (_OTHER, "the rest (hover for the text)")))
            + "</span>")
        self.figure = FigureWidget(
            layout=dict(width=640, height=480, margin=dict(l=10, r=10, t=40, b=10),
                        showlegend=False)
        )
        self.labels: list[str] = []
        self.coords = np.zeros((0, 2))
        self.explained = np.zeros(2)
        self.neighbours: list[tuple[str, float]] = []
        self._quiet = False

        self.mode.observe(self._on_mode, names="value")
        self.dims.observe(lambda _: self._redraw(), names="value")
        self.selected.observe(lambda _: self._on_select(), names="value")
        self._clearing = False
        self._added_at = -math.inf
        self.new_text.observe(lambda _: self._clearing or self._add(), names="value")
        self.add_button.on_click(lambda _: self._add(from_button=True))

        super().__init__(
            [
                widgets.HBox([self.mode, self.dims]),
                widgets.HBox([self.new_text, self.add_button]),
                self.message,
                # Wraps the list under the map when the notebook is narrow.
                widgets.HBox(
                    [widgets.VBox([self.figure, self.legend]),
                     widgets.VBox([self.selected, self.neighbour_list])],
                    layout=widgets.Layout(flex_flow="row wrap"),
                ),
            ]
        )
        self._on_mode()

    # -- helpers -------------------------------------------------------------------------------

    @property
    def _items(self) -> _Collection:
        return self._collections[self.mode.value]

    def _token_text(self, token_id: int) -> str:
        return visible_piece(token_pieces(self._tokenizer, [token_id])[0])

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b3261e" if error else "#333"
        self.message.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

    # -- callbacks -----------------------------------------------------------------------------

    def _on_mode(self, _change: object = None) -> None:
        mode = self.mode.value
        self.new_text.placeholder = (
            "Add a sentence, then press Enter" if mode == "sentences"
            else "Add a word from the plays, then press Enter"
        )
        self.message.value = ""
        self._set_options(self._items.labels[0])
        self._redraw()

    def _set_options(self, value: str) -> None:
        self._quiet = True  # changing options fires a value change; redraw once, not twice
        try:
            self.selected.options = list(self._items.labels)
            self.selected.value = value
        finally:
            self._quiet = False

    @guarded
    def _add(self, from_button: bool = False) -> None:
        # Enter (or leaving the box) and the Add button both arrive here; the box is emptied
        # once its text is added, so the second of the two finds nothing left to add.
        text = self.new_text.value
        if not text.strip():
            # Typing then clicking Add sends the box's text first (it was just added): say
            # nothing then; an Add with nothing typed gets a hint.
            if from_button and time.monotonic() - self._added_at > 2.0:
                self._say("Type something in the box first, then click Add or press Enter.",
                          error=True)
            return
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"That is {len(text):,} characters; keep it under "
                             f"{MAX_TEXT_CHARS:,}.")
        items = self._items
        if self.mode.value == "sentences":
            label = text.strip()
            if label not in items.labels:
                vector = embed([label], self._sentence_model)[0]
                # Checked again after the slow embedding: an item is added once, however the
                # two triggers interleave.
                if label not in items.labels:
                    items.add(label, vector)
            self._say(f"Added: {label}")
        else:
            token_id = self._word_to_token(text)
            if token_id is None:
                return
            label = self._token_text(token_id)
            if label not in items.labels:
                items.add(label, self._wte[token_id])
                self._token_ids.append(token_id)
            self._say(f"Added token {label!r} (id {token_id}).")
        self._added_at = time.monotonic()
        self._clearing = True
        try:
            self.new_text.value = ""
        finally:
            self._clearing = False
        self._set_options(label)
        self._redraw()

    def _word_to_token(self, text: str) -> int | None:
        # Mid-sentence words carry their leading space, so " king" is the common token;
        # try that first, then the word as typed.
        word = text.strip()
        for candidate in (" " + word, word, text):
            ids = self._tokenizer.encode(candidate)
            if len(ids) == 1:
                return ids[0]
        pieces = [self._token_text(i) for i in self._tokenizer.encode(" " + word)]
        self._say(
            f"{word!r} is not a single token in our tokenizer: it splits into {pieces}. "
            "The table has one row per token, so try a more common word.",
            error=True,
        )
        return None

    def _on_select(self) -> None:
        if self._quiet or self.selected.value is None:
            return
        self._update_neighbours()
        self._recolour()

    # -- drawing -------------------------------------------------------------------------------

    def _update_neighbours(self) -> None:
        items = self._items
        i = items.labels.index(self.selected.value)
        if self.mode.value == "tokens":
            # Neighbours over the whole vocabulary: the map shows only a few tokens.
            token_id = self._token_ids[i]
            found = nearest(self._wte, self._wte[token_id], self.k, exclude=[token_id])
            self.neighbours = [(self._token_text(j), s) for j, s in found]
            where = "in the whole vocabulary"
        else:
            found = nearest(items.vectors, items.vectors[i], self.k,
                            exclude=[j for j, label in enumerate(items.labels)
                                     if label == items.labels[i]])
            self.neighbours = [(items.labels[j], s) for j, s in found]
            where = "on the map"
        rows = "".join(
            f"<tr><td>{html.escape(label)}</td><td style='text-align:right'>{s:.3f}</td></tr>"
            for label, s in self.neighbours
        )
        self.neighbour_list.value = (
            f"<b>Nearest {where}</b> (cosine)<table style='font-family:monospace'>{rows}</table>"
        )

    def _colours(self) -> list[str]:
        near = {label for label, _ in self.neighbours}
        return [
            _SELECTED if label == self.selected.value else _NEIGHBOUR if label in near else _OTHER
            for label in self.labels
        ]

    def _point_labels(self) -> list[str]:
        # Only the selected point and its neighbours are labelled: all labels would collide.
        near = {label for label, _ in self.neighbours} | {self.selected.value}
        return [_short(label) if label in near else "" for label in self.labels]

    def _recolour(self) -> None:
        if self.figure.data:
            with self.figure.batch_update():
                self.figure.data[0].marker.color = self._colours()
                self.figure.data[0].text = self._point_labels()

    def _redraw(self) -> None:
        items = self._items
        self.labels = list(items.labels)
        dims = self.dims.value
        fit = pca(items.vectors, min(dims, len(self.labels), items.vectors.shape[1]))
        coords = fit.transform(items.vectors).numpy()
        ratio = fit.explained_variance_ratio.numpy()
        if coords.shape[1] < dims:  # fewer points than axes: the extra axes are flat
            pad = dims - coords.shape[1]
            coords = np.pad(coords, ((0, 0), (0, pad)))
            ratio = np.pad(ratio, (0, pad))
        self.coords, self.explained = coords, ratio
        self._update_neighbours()

        marker = dict(size=9 if dims == 2 else 5, color=self._colours())
        common = dict(mode="markers+text", text=self._point_labels(), hovertext=self.labels,
                      hoverinfo="text", textposition="top center", marker=marker)
        axis = [f"PC{j + 1} ({100 * ratio[j]:.0f}%)" for j in range(dims)]
        title = (f"{len(self.labels)} {self.mode.value}: PCA keeps {100 * ratio.sum():.0f}% "
                 "of the variance")
        # Traces are swapped outside batch_update: plotly batches property edits, not the
        # adding and removing of traces, and 2-D and 3-D need different trace types.
        self.figure.data = []
        if dims == 2:
            self.figure.add_trace(go.Scatter(x=coords[:, 0], y=coords[:, 1], **common))
            # Room around the points, so labels at the edges are not cut off.
            ranges = [_padded(coords[:, j], pad) for j, pad in ((0, 0.2), (1, 0.1))]
            layout = dict(xaxis=dict(title=axis[0], range=ranges[0]),
                          yaxis=dict(title=axis[1], range=ranges[1]))
        else:
            self.figure.add_trace(
                go.Scatter3d(x=coords[:, 0], y=coords[:, 1], z=coords[:, 2], **common)
            )
            layout = dict(scene=dict(xaxis_title=axis[0], yaxis_title=axis[1],
                                     zaxis_title=axis[2]))
        self.figure.update_layout(title=dict(text=title, font=dict(size=13)), **layout)
        self.figure.data[0].on_click(self._on_click)

    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            self.selected.value = self.labels[points.point_inds[0]]
