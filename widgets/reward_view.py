"""A live reward curve for reinforcement learning: pass view.update as grpo_train's callback."""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go

from widgets.figure import FigureWidget


class RewardCurveView(widgets.VBox):
    """The mean reward of each step's sampled answers, and its running mean, drawn as a run goes.

    `update(step, info)` has course_lib.rl.grpo_train's callback signature; info holds "reward"
    (and "kl"). Shown data: `figure` (trace 0 each step's mean reward, trace 1 its running mean
    over `window` steps), `steps`, `rewards` and `status` (the last step, as text).
    """

    def __init__(self, title: str = "GRPO: mean reward of each step's answers", window: int = 5,
                 max_reward: float = 1.0) -> None:
        self.window = max(1, int(window))
        self.steps: list[int] = []
        self.rewards: list[float] = []
        self.figure = FigureWidget(
            data=[go.Scatter(x=[], y=[], mode="markers", name="step's mean reward",
                             marker={"size": 5, "opacity": 0.5}),
                  go.Scatter(x=[], y=[], mode="lines", name=f"mean of {self.window} steps")],
            layout=go.Layout(title=title, width=640, height=300, xaxis_title="step",
                             yaxis={"title": "reward", "range": [-0.02, max_reward + 0.02]},
                             margin={"l": 50, "r": 10, "t": 40, "b": 40}))
        self.status = widgets.HTML("waiting for the first step")
        super().__init__([self.figure, self.status])

    def update(self, step: int, info: dict) -> None:
        """Add one step's figures and redraw."""
        self.steps.append(step + 1)
        self.rewards.append(float(info["reward"]))
        recent = [sum(self.rewards[max(0, i + 1 - self.window): i + 1]) /
                  len(self.rewards[max(0, i + 1 - self.window): i + 1])
                  for i in range(len(self.rewards))]
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = self.steps, self.rewards
            self.figure.data[1].x, self.figure.data[1].y = self.steps, [round(v, 4)
                                                                         for v in recent]
        kl = f", KL to the start {info['kl']:.3f}" if "kl" in info else ""
        self.status.value = f"step {step + 1}: mean reward {self.rewards[-1]:.2f}{kl}"
