"""The block-table view: a paged KV cache's physical blocks, step by step, coloured by owner."""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from widgets.figure import FigureWidget

FREE, CACHED, SHARED = "#ffffff", "#c8c8c8", "#222222"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#7f7f7f")


def block_label(owner: tuple[str, ...] | str) -> str:
    """The text of one block's cell: its owners joined by '+', or 'cached' / '' (free)."""
    if isinstance(owner, tuple):
        return "+".join(owner)
    return "" if owner == "free" else owner


class BlockTableView(widgets.VBox):
    """Step through a recorded schedule (course_lib.engine.record_schedule's frames) and see
    which request holds each physical block of the KV cache.

    Controls: `step` (IntSlider over the frames). Shown data: `figure` (a grid of the blocks,
    block 0 at the top left; colour = owner, black = shared by several requests, grey = cached,
    white = free), `shown` (the frame drawn now), `table` (HTML: each running request's block
    table, who waits, and what the step reported).
    """

    def __init__(self, frames: list[dict], columns: int = 8, step: int = 0):
        if not frames:
            raise ValueError("frames is empty: record a schedule with record_schedule first")
        self.frames, self.columns = frames, columns
        ids = sorted({i for f in frames for o in f["blocks"] if isinstance(o, tuple) for i in o})
        self.colours = {i: PALETTE[k % len(PALETTE)] for k, i in enumerate(ids)}
        n = len(frames[0]["blocks"])
        self.rows = -(-n // columns)
        self.step = widgets.IntSlider(value=step, min=0, max=len(frames) - 1, description="step",
                                      continuous_update=True)
        self.table = widgets.HTML()
        self.shown: dict = {}
        self.figure = FigureWidget(
            data=[go.Scatter(x=[], y=[], mode="markers+text", text=[], textposition="middle center",
                             marker=dict(symbol="square", size=44, color=[],
                                         line=dict(color="#444", width=1)),
                             hovertext=[], hoverinfo="text")],
            layout=go.Layout(height=70 + 52 * self.rows, width=80 + 56 * columns,
                             margin=dict(l=40, r=20, t=40, b=20), showlegend=False,
                             xaxis=dict(visible=False, range=[-0.6, columns - 0.4]),
                             yaxis=dict(visible=False, range=[self.rows - 0.4, -0.6]),
                             title="KV cache blocks (grey: cached, white: free)"),
        )
        self.step.observe(self._update, names="value")
        super().__init__([self.step, self.figure, self.table])
        self._update()

    def colour(self, owner: tuple[str, ...] | str) -> str:
        if isinstance(owner, tuple):
            return self.colours[owner[0]] if len(owner) == 1 else SHARED
        return CACHED if owner == "cached" else FREE

    def _update(self, change=None) -> None:
        frame = self.frames[self.step.value]
        self.shown = frame
        blocks = frame["blocks"]
        with self.figure.batch_update():
            trace = self.figure.data[0]
            trace.x = [b % self.columns for b in range(len(blocks))]
            trace.y = [b // self.columns for b in range(len(blocks))]
            trace.text = [block_label(o) for o in blocks]
            trace.marker.color = [self.colour(o) for o in blocks]
            trace.textfont = dict(color=["#ffffff" if isinstance(o, tuple) else "#333333"
                                         for o in blocks])
            trace.hovertext = [f"block {b}: {block_label(o) or 'free'}"
                               for b, o in enumerate(blocks)]
            self.figure.layout.title = (f"step {frame['step']}: "
                                        f"{sum(isinstance(o, tuple) for o in blocks)} blocks in "
                                        f"use, {blocks.count('cached')} cached, "
                                        f"{blocks.count('free')} free")
        rows = "".join(
            f"<tr><td style='padding:1px 8px;color:{self.colours.get(i, '#000')}'><b>"
            f"{html.escape(i)}</b></td><td style='padding:1px 8px'>{table}</td></tr>"
            for i, table in frame["tables"].items())
        waiting = ", ".join(frame["waiting"]) or "nobody"
        events = "; ".join(frame["events"]) or "nothing"
        self.table.value = (
            "<table><tr><th style='text-align:left;padding:1px 8px'>request</th>"
            "<th style='text-align:left;padding:1px 8px'>block table</th></tr>"
            f"{rows}</table><div>waiting: {html.escape(waiting)}</div>"
            f"<div>this step: {html.escape(events)}</div>")
