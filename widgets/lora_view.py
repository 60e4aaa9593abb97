"""LoRAView: how many parameters LoRA trains as the rank grows, for the layers you choose."""

from __future__ import annotations

import html
from collections.abc import Iterable

import ipywidgets as widgets
from plotly.subplots import make_subplots
from torch import nn

from course_lib.lora import lora_budget, lora_target_layers
from course_lib.validation import check_int
from widgets.common import message_box, warn
from widgets.figure import FigureWidget

# The linear layers of a GPT block, by the suffix add_lora's targets match on.
LAYER_KINDS: dict[str, str] = {
    "attn.c_attn": "attention q, k, v",
    "attn.c_proj": "attention output",
    "mlp.c_fc": "MLP up",
    "mlp.c_proj": "MLP down",
}


class LoRAView(widgets.VBox):
    """Trainable parameters and % of the model against LoRA rank, beside full weight updates.

    Controls: `rank` (slider) and `checkboxes` (one per layer kind; `targets` is the ticked
    tuple). Shown data: `ranks`, `counts` (LoRA parameters at each rank), `full_count` (the
    weight matrices of the same layers, trained in full), `trainable` and `percent` at the
    chosen rank, `summary`, `figure`.
    """

    def __init__(
        self,
        model: nn.Module,
        rank: int = 8,
        targets: Iterable[str] = ("attn.c_attn",),
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
        # Layer shapes never change, so each slider move is arithmetic, not a model pass:
        # course_lib.lora counts each layer kind once, here.
        self._budgets = {kind: lora_budget(model, (kind,)) for kind in LAYER_KINDS
                         if lora_target_layers(model, (kind,))}
        if not self._budgets:
            raise ValueError(
                f"model has none of the layers {list(LAYER_KINDS)}: is it a course_lib GPT?"
            )
        self._n_layers = {kind: len(lora_target_layers(model, (kind,))) for kind in self._budgets}
        self.model_total = next(iter(self._budgets.values()))["base_total"]
        self.max_rank = min(b["max_rank"] for b in self._budgets.values())
        self.ranks = list(range(1, self.max_rank + 1))

        if isinstance(targets, str):
            targets = (targets,)
        targets = tuple(targets)
        unknown = [t for t in targets if t not in self._budgets]
        if unknown:
            raise ValueError(f"targets {unknown} are not layer kinds of this model; "
                             f"choose from {list(self._budgets)}")
        rank = check_int("rank", rank, minimum=1, maximum=self.max_rank)
        self.rank = widgets.IntSlider(
            value=rank, min=1, max=self.max_rank,
            description="rank r", continuous_update=False,
            layout=widgets.Layout(width="420px"),
        )
        self.checkboxes: dict[str, widgets.Checkbox] = {
            kind: widgets.Checkbox(
                value=kind in targets, description=f"{kind} ({LAYER_KINDS[kind]})",
                indent=False, layout=widgets.Layout(width="auto"),
            )
            for kind in self._budgets
        }
        self.summary = message_box()
        self.figure = FigureWidget(
            make_subplots(rows=1, cols=2, horizontal_spacing=0.14, subplot_titles=(
                "trainable parameters", "% of the model's parameters (log scales)")),
        )
        for col in (1, 2):
            show = col == 1
            self.figure.add_scatter(x=[], y=[], mode="lines", name="LoRA, rank r",
                                    line=dict(color="#1f77b4"), legendgroup="lora",
                                    showlegend=show, row=1, col=col)
            self.figure.add_scatter(x=[], y=[], mode="lines", name="full weight matrices",
                                    line=dict(color="#d62728", dash="dash"),
                                    legendgroup="full", showlegend=show, row=1, col=col)
            self.figure.add_scatter(x=[], y=[], mode="markers", name="chosen rank",
                                    marker=dict(size=11, color="#ff7f0e"),
                                    legendgroup="now", showlegend=show, row=1, col=col)
        self.figure.update_xaxes(title_text="rank r")
        # Log scales on the right: the small ranks people use are visible, and a count that
        # grows in proportion to r is a straight line of slope 1.
        self.figure.update_xaxes(type="log", row=1, col=2)
        self.figure.update_yaxes(title_text="parameters", tickformat="~s", row=1, col=1)
        self.figure.update_yaxes(type="log", title_text="% of the model", ticksuffix=" %",
                                 showticksuffix="all", tickformat="~g", row=1, col=2)
        self.figure.update_layout(height=360, width=820, margin=dict(l=60, r=20, t=40, b=50),
                                  legend=dict(orientation="h", y=-0.22))

        # The figure's own `layout` is plotly's; this box is what hides it.
        self.figure_box = widgets.Box([self.figure])
        self.counts: list[int] = []
        self.full_count = 0
        self.trainable = 0
        self.percent = 0.0
        self.rank.observe(self._on_rank, names="value")
        for box in self.checkboxes.values():
            box.observe(self._on_targets, names="value")
        super().__init__([
            widgets.HTML("<b>Apply LoRA to:</b>"),
            widgets.HBox(list(self.checkboxes.values()),
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.rank, self.summary, self.figure_box,
        ])
        self._on_targets()

    @property
    def targets(self) -> tuple[str, ...]:
        """The ticked layer kinds."""
        return tuple(k for k, box in self.checkboxes.items() if box.value)

    def _on_targets(self, change=None) -> None:
        budgets = [self._budgets[kind] for kind in self.targets]
        per_rank = sum(b["per_rank"] for b in budgets)  # A is r x in, B is out x r
        self.counts = [r * per_rank for r in self.ranks]
        # LoRA stands in for an update of the weight matrices, so compare with training those.
        self.full_count = sum(b["full"] for b in budgets)
        pct = 100 / self.model_total
        # With nothing ticked there is nothing to plot: hide the figure rather than show
        # empty, meaningless axes.
        self.figure_box.layout.display = None if budgets else "none"
        with self.figure.batch_update():
            for col, scale in ((0, 1), (3, pct)):
                lora, full = self.figure.data[col], self.figure.data[col + 1]
                if budgets:
                    lora.x, lora.y = self.ranks, [c * scale for c in self.counts]
                    full.x, full.y = [1, self.max_rank], [self.full_count * scale] * 2
                else:
                    lora.x = lora.y = full.x = full.y = []
        self._on_rank()

    def _on_rank(self, change=None) -> None:
        r = self.rank.value
        n_layers = sum(self._n_layers[kind] for kind in self.targets)
        if not n_layers:
            self.trainable, self.percent = 0, 0.0
            for col in (2, 5):
                self.figure.data[col].x, self.figure.data[col].y = [], []
            self.summary.value = warn("Tick at least one layer kind: LoRA needs a layer to "
                                      "adapt.")
            return
        self.trainable = self.counts[r - 1]
        self.percent = 100 * self.trainable / self.model_total
        with self.figure.batch_update():
            self.figure.data[2].x, self.figure.data[2].y = [r], [self.trainable]
            self.figure.data[5].x, self.figure.data[5].y = [r], [self.percent]
        per_rank = self.counts[0]
        break_even = self.full_count / per_rank
        verdict = (
            "fewer" if self.trainable < self.full_count
            else "the same number of" if self.trainable == self.full_count else "more"
        )
        self.summary.value = (
            f"<div style='line-height:1.5'>{n_layers} layers "
            f"({html.escape(', '.join(self.targets))}), "
            f"each gets A (r &times; in) and B (out &times; r): "
            f"<b>{self.trainable:,}</b> trainable parameters at r = {r}, "
            f"<b>{self.percent:.2f} %</b> of the model's {self.model_total:,}.<br>"
            f"Training these weight matrices in full means {self.full_count:,} "
            f"({100 * self.full_count / self.model_total:.1f} %), so rank {r} trains {verdict} "
            f"parameters; the two are equal near r = {break_even:.1f}.</div>"
        )
