"""A view of positional encodings: one sinusoid, similarity against offset, and RoPE's rotation."""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from course_lib.positional import (
    position_similarities,
    rope_pair_rotation,
    similarity_by_offset,
    sinusoidal,
)
from course_lib.validation import check_int
from widgets.figure import FigureWidget

_COLOURS = {"sinusoidal": "#1f77b4", "learned": "#d62728", "rotary": "#2ca02c"}


class PositionView(widgets.VBox):
    """Sliders for position and dimension; three plots follow them.

    - `wave_figure`: dimension `dimension` of the sinusoidal table across positions, the chosen
      position marked (`wave` holds the curve).
    - `similarity_figure`: cosine similarity between the chosen position and every other one,
      against the offset, for sinusoidal, learned (if a table is given) and rotary encodings
      (`similarity` holds {kind: (offsets, values)}).
    - `rotation_figure`: RoPE turning the pair of dimensions that holds `dimension`, at the
      chosen position (`rotated` is the turned (x, y), `angle` the angle in radians).
    Every curve is computed once, in the constructor; a slider move only picks rows.
    """

    def __init__(
        self,
        learned: torch.Tensor | None = None,
        n_positions: int | None = None,
        d_model: int | None = None,
    ):
        if learned is not None:
            if not isinstance(learned, torch.Tensor) or learned.dim() != 2:
                raise TypeError("learned must be a 2-D tensor (positions x dimensions), got "
                                f"{type(learned).__name__}")
            learned = learned.detach().float().cpu()
            n_positions = n_positions or learned.shape[0]
            d_model = d_model or learned.shape[1]
        n_positions = check_int("n_positions", 128 if n_positions is None else n_positions,
                                minimum=2, maximum=4096)
        d_model = check_int("d_model", 64 if d_model is None else d_model, minimum=2,
                            maximum=4096)
        if d_model % 2:
            raise ValueError(f"d_model must be even (sin and cos come in pairs), got {d_model}")
        self.n_positions, self.d_model = n_positions, d_model
        self.table = sinusoidal(n_positions, d_model).numpy()
        self.similarities = {
            kind: sim.numpy()
            for kind, sim in position_similarities(n_positions, d_model, learned).items()
        }

        self.position = widgets.IntSlider(
            value=min(20, n_positions - 1), min=0, max=n_positions - 1, description="position",
            continuous_update=False,  # on release: a drag would queue three redraws per pixel
        )
        self.dimension = widgets.IntSlider(
            value=min(8, d_model - 1), min=0, max=d_model - 1, description="dimension",
            continuous_update=False,
        )

        positions = np.arange(n_positions)
        self._fine = np.linspace(0, n_positions - 1, 8 * (n_positions - 1) + 1)
        self.wave_figure = FigureWidget(
            data=[
                go.Scatter(x=positions, y=self.table[:, 0], mode="markers",
                           name="encoding (at each position)",
                           marker=dict(size=5, color=_COLOURS["sinusoidal"])),
                go.Scatter(x=[0], y=[0], mode="markers", name="chosen position",
                           marker=dict(size=11, color="black")),
                # The wave between positions: fast ones, joined only at whole positions, would
                # look like zig-zags.
                go.Scatter(x=self._fine, y=np.zeros_like(self._fine), mode="lines",
                           name="the continuous wave", hoverinfo="skip",
                           line=dict(color=_COLOURS["sinusoidal"], width=1)),
            ],
            layout=go.Layout(
                height=260, margin=dict(l=50, r=20, t=40, b=40), showlegend=False,
                xaxis_title="position", yaxis=dict(title="value", range=[-1.1, 1.1]),
            ),
        )
        self.similarity_figure = FigureWidget(
            data=[
                go.Scatter(x=[0], y=[1], mode="lines", name=kind, line=dict(color=_COLOURS[kind]))
                for kind in self.similarities
            ],
            layout=go.Layout(
                height=330, width=520, margin=dict(l=50, r=20, t=40, b=40),
                xaxis_title="offset (other position - chosen position)",
                yaxis=dict(title="cosine similarity", range=[-1.05, 1.05]),
                legend=dict(orientation="h", y=-0.25),
            ),
        )
        circle = np.linspace(0, 2 * math.pi, 121)
        self.rotation_figure = FigureWidget(
            data=[
                go.Scatter(x=np.cos(circle), y=np.sin(circle), mode="lines", hoverinfo="skip",
                           line=dict(color="lightgrey"), name="unit circle"),
                go.Scatter(x=[0, 1], y=[0, 0], mode="lines+markers", name="position 0",
                           line=dict(color="grey", dash="dot")),
                go.Scatter(x=[0, 1], y=[0, 0], mode="lines+markers", name="chosen position",
                           line=dict(color=_COLOURS["rotary"], width=4)),
            ],
            layout=go.Layout(
                height=330, width=360, margin=dict(l=30, r=20, t=40, b=40), showlegend=False,
                xaxis=dict(range=[-1.2, 1.2], zeroline=False),
                yaxis=dict(range=[-1.2, 1.2], zeroline=False, scaleanchor="x"),
            ),
        )
        self.wave: np.ndarray = self.table[:, 0]
        self.similarity: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.rotated: tuple[float, float] = (1.0, 0.0)
        self.angle = 0.0

        self.position.observe(self._update, names="value")
        self.dimension.observe(self._update, names="value")
        self._update()
        super().__init__(
            [
                widgets.HBox([self.position, self.dimension]),
                self.wave_figure,
                widgets.HBox([self.similarity_figure, self.rotation_figure]),
            ]
        )

    def _update(self, change=None) -> None:
        pos, dim = self.position.value, self.dimension.value
        pair = dim // 2
        self.angle, wavelength = rope_pair_rotation(pos, pair, self.d_model)
        self.wave = self.table[:, dim]
        fn = "sin" if dim % 2 == 0 else "cos"
        with self.wave_figure.batch_update():
            self.wave_figure.data[0].y = self.wave
            self.wave_figure.data[1].x = [pos]
            self.wave_figure.data[1].y = [self.wave[pos]]
            angles = self._fine * 10000 ** (-2 * pair / self.d_model)
            self.wave_figure.data[2].y = np.sin(angles) if dim % 2 == 0 else np.cos(angles)
            self.wave_figure.layout.title = (
                f"dimension {dim} = {fn}(position x {10000 ** (-2 * pair / self.d_model):.3g}): "
                f"repeats every {wavelength:.1f} positions"
            )

        self.similarity = {}
        for kind, sim in self.similarities.items():
            offsets, row = similarity_by_offset(torch.from_numpy(sim), pos)
            self.similarity[kind] = (offsets.numpy(), row.numpy())
        with self.similarity_figure.batch_update():
            for trace in self.similarity_figure.data:
                trace.x, trace.y = self.similarity[trace.name]
            self.similarity_figure.layout.title = f"similarity of position {pos} to the others"

        self.rotated = (math.cos(self.angle), math.sin(self.angle))
        with self.rotation_figure.batch_update():
            self.rotation_figure.data[2].x = [0, self.rotated[0]]
            self.rotation_figure.data[2].y = [0, self.rotated[1]]
            self.rotation_figure.layout.title = (
                f"RoPE turns dims {2 * pair},{2 * pair + 1} by "
                f"{math.degrees(self.angle) % 360:.0f}°"
            )
