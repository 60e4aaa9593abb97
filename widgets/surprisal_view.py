"""SurprisalView: text you type, each token coloured by how surprised the model is by it."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

import ipywidgets as widgets

from course_lib.evaluation import surprisal, surprisal_summary
from course_lib.interpret import token_pieces
from course_lib.model import GPT
from course_lib.validation import check_bool, check_float, check_int, check_str
from widgets.common import encode_text, message_box, note, piece_text, reported, warn

# Light yellow to dark red (ColorBrewer YlOrRd): more surprise, hotter colour.
_STOPS = ((0.0, (255, 255, 204)), (0.25, (254, 217, 118)), (0.5, (253, 141, 60)),
          (0.75, (227, 26, 28)), (1.0, (128, 0, 38)))
FIRST_TOKEN_COLOUR = "#e0e0e0"
# Above this many parameters a pass over a long text takes seconds on one core (SmolLM2: about
# 3 s for 2,000 characters), so recolouring on every keystroke would queue pass after pass.
LIVE_MAX_PARAMS = 10_000_000


def surprisal_colour(bits: float, max_bits: float) -> str:
    """A CSS colour for a surprisal, on a fixed scale from 0 to max_bits (clipped)."""
    t = min(max(bits / max_bits, 0.0), 1.0)
    # The first segment whose right end reaches t (t <= 1, the last stop, so one always does).
    (t0, c0), (t1, c1) = next(
        (lo, hi) for lo, hi in zip(_STOPS, _STOPS[1:], strict=False) if t <= hi[0]
    )
    f = (t - t0) / (t1 - t0)
    red, green, blue = (round(x0 + f * (x1 - x0)) for x0, x1 in zip(c0, c1, strict=True))
    return f"#{red:02x}{green:02x}{blue:02x}"


def _legend(max_bits: float) -> str:
    stops = ", ".join(surprisal_colour(t * max_bits, max_bits) for t in (0, .25, .5, .75, 1))
    step = 4 if max_bits >= 12 else 2
    ticks = "".join(
        f"<span style='position:absolute;left:{100 * b / max_bits:.1f}%;"
        f"transform:translateX(-50%)'>{b}</span>"
        for b in range(0, int(max_bits) + 1, step)
    )
    return (
        "<div style='font-size:12px;margin:4px 0 14px 0'>"
        "<div>surprisal of each token, in bits (&minus;log<sub>2</sub> p): 1 bit = a coin flip's "
        f"surprise, {max_bits:g}+ bits = rarer than 1 in {2 ** max_bits:,.0f}. "
        f"<span style='background:{FIRST_TOKEN_COLOUR};padding:0 3px'>grey</span>: the first "
        "token, given as context, not predicted. Hover a token for its figures.</div>"
        f"<div style='width:320px;height:12px;margin-top:4px;"
        f"background:linear-gradient(to right, {stops})'></div>"
        f"<div style='position:relative;width:320px;height:14px'>{ticks}</div></div>"
    )


class SurprisalView(widgets.VBox):
    """Type text; every token is coloured by the model's surprisal at it.

    Controls: `text` (a Textarea) and `model_name` (a Dropdown, when several models are given).
    Shown data: `rows` (token text, bits or None), `bits_per_char`, `html` (the coloured text),
    `message` (what went wrong, if anything).

    continuous_update: recolour on every keystroke (True) or when the box loses focus (False);
    None chooses every keystroke only when each model has at most LIVE_MAX_PARAMS parameters.
    """

    def __init__(
        self,
        models: GPT | Mapping[str, GPT],
        tokenizer,
        text: str = "",
        max_bits: float = 16.0,
        max_chars: int = 2000,
        continuous_update: bool | None = None,
    ):
        if isinstance(models, GPT):
            models = {"model": models}
        if not models or not all(isinstance(m, GPT) for m in models.values()):
            raise TypeError("models must be a GPT or a non-empty dict of name -> GPT")
        check_str("text", text, allow_empty=True)
        max_bits = check_float("max_bits", max_bits, minimum=0.5, maximum=64)
        max_chars = check_int("max_chars", max_chars, minimum=1, maximum=100_000)
        continuous_update = check_bool("continuous_update", continuous_update, allow_none=True)
        if continuous_update is None:
            continuous_update = all(m.num_parameters() <= LIVE_MAX_PARAMS
                                    for m in models.values())
        self.models = dict(models)
        self.tokenizer = tokenizer
        self.max_bits = float(max_bits)
        self.max_chars = max_chars
        self.text = widgets.Textarea(
            value=text, continuous_update=continuous_update,
            placeholder="Type or paste some text here",
            layout=widgets.Layout(width="100%", height="90px"),
        )
        self.model_name = widgets.Dropdown(options=list(self.models), description="model",
                                           layout=widgets.Layout(
                                               display=None if len(self.models) > 1 else "none"))
        self.html = widgets.HTML()
        self.summary = widgets.HTML()
        self.message = message_box()
        self.rows: list[tuple[str, float | None]] = []
        self.bits_per_char: float | None = None
        self.text.observe(self._update, names="value")
        self.model_name.observe(self._update, names="value")
        hint = widgets.HTML("" if continuous_update else
                            note("A big model: the text is scored when you click outside the box."))
        super().__init__([self.model_name, hint, self.text, self.message, self.html, self.summary,
                          widgets.HTML(_legend(self.max_bits))])
        self._update()

    def _show_problem(self, problem: str) -> None:
        self.rows, self.bits_per_char = [], None
        self.html.value = self.summary.value = ""
        self.message.value = warn(problem)

    def _update(self, change=None) -> None:
        text = self.text.value
        if not text.strip():
            self._show_problem("Type some text above to see how surprising each token is.")
            return
        cut = ""
        if len(text) > self.max_chars:
            text = text[: self.max_chars]
            cut = f"Showing the first {self.max_chars} characters only."
        self._show_problem("")
        with reported(self.message):  # the learner's text, refused by the library: shown
            ids, _ = encode_text(self.tokenizer, text)
            rows = surprisal(self.models[self.model_name.value], self.tokenizer, text)
            # A token holding part of a character decodes to U+FFFD: show its bytes instead.
            self.rows = [(piece_text(data), bits)
                         for data, (_, bits) in zip(token_pieces(self.tokenizer, ids), rows,
                                                    strict=True)]
            self.message.value = note(cut) if cut else ""
            self.html.value = self._render(self.rows)
            totals = surprisal_summary(rows, text)
            if totals is None:
                self.bits_per_char = None
                self.summary.value = "<i>One token only: type more, it has nothing to predict.</i>"
                return
            self.bits_per_char = totals["bits_per_char"]
            per_char = ("" if self.bits_per_char is None
                        else f", <b>{self.bits_per_char:.2f} bits/char</b>")
            self.summary.value = (
                f"{totals['tokens']} tokens scored, {totals['total_bits']:.1f} bits in all: "
                f"<b>{totals['bits_per_token']:.2f} bits/token</b> "
                f"(perplexity {totals['perplexity']:.1f}){per_char}."
            )

    def _render(self, rows: list[tuple[str, float | None]]) -> str:
        spans = []
        for piece, bits in rows:
            shown = html.escape(piece).replace("\n", "&#8629;\n")
            if bits is None:
                colour, fg, tip = FIRST_TOKEN_COLOUR, "#000", "first token: context, not scored"
            else:
                colour = surprisal_colour(bits, self.max_bits)
                fg = "#fff" if bits > 0.6 * self.max_bits else "#000"
                tip = f"{bits:.2f} bits, p = {math.pow(2, -bits):.2g}"
            spans.append(f"<span title='{html.escape(repr(piece))}: {tip}' style='background:"
                         f"{colour};color:{fg};border-radius:2px;margin-right:1px'>{shown}</span>")
        return ("<div style='white-space:pre-wrap;font-family:monospace;line-height:1.7;"
                "padding:6px;border:1px solid #ddd'>" + "".join(spans) + "</div>")
