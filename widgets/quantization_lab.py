"""The quantization lab: bits and group size against one matrix's error, bits/char and size."""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from course_lib.quantize import quantization_summary
from widgets.figure import FigureWidget

GROUP_CHOICES = (("16", 16), ("32", 32), ("64", 64), ("whole row", None))


class QuantizationLab(widgets.VBox):
    """Move `bits` and `group_size`; see one weight matrix's rounding errors, the model's bits
    per character on a held-out text and its size, against the float model.

    Controls: `bits` (IntSlider, 2 to 8; 9 means float32), `group_size` (Dropdown),
    `matrix` (Dropdown of the model's 2-D weights). Shown data: `figure` (error histogram),
    `summary` (course_lib.quantize.quantization_summary's dict, without the errors), `table`
    (its HTML), `message`. One update quantizes the model and scores the text once.
    """

    def __init__(self, model, tokenizer, text: str, bits: int = 4, group_size: int | None = 32,
                 matrix: str | None = None):
        self.model, self.tokenizer, self.text = model, tokenizer, text
        names = [n for n, p in model.named_parameters() if p.dim() == 2]
        if not names:
            raise ValueError("model has no 2-D weight matrices to quantize")
        wide = {"description_width": "initial"}
        self.bits = widgets.IntSlider(value=bits, min=2, max=9, description="bits (9 = float32)",
                                      style=wide, continuous_update=False)
        self.group_size = widgets.Dropdown(options=GROUP_CHOICES, value=group_size,
                                           description="group size", style=wide)
        self.matrix = widgets.Dropdown(options=names, value=matrix or names[min(2, len(names) - 1)],
                                       description="matrix", style=wide,
                                       layout=widgets.Layout(width="420px"))
        self.message = widgets.HTML()
        self.table = widgets.HTML()
        self.summary: dict = {}
        self.figure = FigureWidget(
            data=[go.Histogram(x=[], nbinsx=80, marker_color="#1f77b4")],
            layout=go.Layout(height=320, width=700, margin=dict(l=60, r=20, t=40, b=50),
                             xaxis=dict(title="dequantized weight - float weight"),
                             yaxis=dict(title="weights"), title="rounding error of one matrix"),
        )
        self._float = quantization_summary(model, tokenizer, text, None, None, self.matrix.value)
        for control in (self.bits, self.group_size, self.matrix):
            control.observe(self._update, names="value")
        super().__init__([widgets.HBox([self.bits, self.group_size]), self.matrix, self.message,
                          self.table, self.figure])
        self._update()

    def _update(self, change=None) -> None:
        bits = None if self.bits.value > 8 else self.bits.value
        try:
            s = quantization_summary(self.model, self.tokenizer, self.text, bits,
                                     self.group_size.value, self.matrix.value)
        except (ValueError, TypeError) as e:
            self.message.value = f"<span style='color:#b3261e'>{html.escape(str(e))}</span>"
            return
        self.message.value = ""
        errors = s.pop("errors")
        self.summary = s
        with self.figure.batch_update():
            self.figure.data[0].x = errors.numpy()
        fmt = "float32" if bits is None else (
            f"int{bits}, groups of {self.group_size.value or 'a whole row'}")
        f = self._float
        self.table.value = (
            "<table style='border-collapse:collapse'>"
            "<tr><th style='text-align:left;padding:2px 12px'></th><th>float32</th>"
            f"<th style='padding:2px 12px'>{html.escape(fmt)}</th></tr>"
            f"<tr><td style='padding:2px 12px'>bits per weight</td><td>32</td>"
            f"<td style='padding:2px 12px'>{s['bits_per_weight']:.2f}</td></tr>"
            f"<tr><td style='padding:2px 12px'>model size</td><td>{f['nbytes'] / 1e6:.2f} MB</td>"
            f"<td style='padding:2px 12px'>{s['nbytes'] / 1e6:.2f} MB</td></tr>"
            f"<tr><td style='padding:2px 12px'>held-out bits/char</td>"
            f"<td>{f['bits_per_char']:.4f}</td>"
            f"<td style='padding:2px 12px'><b>{s['bits_per_char']:.4f}</b> "
            f"({s['bits_per_char'] - f['bits_per_char']:+.4f})</td></tr>"
            f"<tr><td style='padding:2px 12px'>RMS error of this matrix</td><td>0</td>"
            f"<td style='padding:2px 12px'>{s['rms_error']:.5f}</td></tr></table>"
        )
