"""The chat view: talk to SmolLM2 or the fine-tuned shipped model, see the template as tokens."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator

import ipywidgets as widgets

from course_lib import assistant
from course_lib.safety import GATE_REFUSAL
from course_lib.sampling import SamplingParams
from course_lib.tokenization import token_pieces, visible_piece

MAX_CHARS = 4000  # a longer message is refused before it is even tokenized


class ChatView(widgets.VBox):
    """A chat box: message history, a text box and Send, a system prompt, temperature and top-p.

    The reply streams into the transcript as it is generated, whole characters only. "Show the
    template" displays the exact text and token ids the model is given. template: "chatml" (a
    model with <|im_start|> special tokens, through course_lib.chat), "plain" (the shipped
    model's "### Question:" format, course_lib.assistant) or "auto" (chosen by the tokenizer).
    stream_fn(messages, params=SamplingParams(...)) may replace the model's generation (tests
    give a fake one). moderation: None (off, the default), or a gate with allows(text) -> bool
    (course_lib.safety.ModerationGate) that reads each message first; a message it stops is
    answered with safety.GATE_REFUSAL, the model never seeing it, and `gated` is then True.

    Controls: `text`, `send_button`, `clear_button`, `system`, `temperature`, `top_p`,
    `show_template`. Shown data: `history` (the messages), `transcript` (HTML), `reply` (the
    last reply), `prompt_ids` / `prompt_text` (what the model was last given), `template_box`,
    `message` (what is wrong with the input, if anything) and `first_piece_seconds`.
    CSS classes for a browser: chat-view, chat-input, chat-send, chat-transcript; each reply is
    a div.chat-reply, with class chat-done once it is complete.
    """

    def __init__(self, model, tokenizer, *, template: str = "auto", system_prompt: str = "",
                 max_new_tokens: int = 48, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = 0,
                 stream_fn: Callable[..., Iterator[str]] | None = None, moderation=None):
        if moderation is not None and not callable(getattr(moderation, "allows", None)):
            raise TypeError("moderation must be None or a gate with an allows(text) method "
                            f"(course_lib.safety.ModerationGate), got {type(moderation).__name__}")
        self.model, self.tokenizer = model, tokenizer
        self.moderation, self.gated = moderation, False
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self.template_kind = _pick_template(tokenizer, template)
        self._stream_fn = stream_fn
        self.history: list[dict] = []
        self.reply = ""
        self.prompt_ids: list[int] = []
        self.prompt_text = ""
        self.first_piece_seconds: float | None = None
        wide = {"description_width": "initial"}
        self.system = widgets.Textarea(value=system_prompt, description="system prompt",
                                       placeholder="(none)", style=wide,
                                       layout=widgets.Layout(width="640px", height="48px"))
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                               description="temperature (0 = greedy)",
                                               style=wide)
        self.top_p = widgets.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05,
                                         description="top-p (1 = off)", style=wide)
        self.text = widgets.Textarea(placeholder="Type a message, then Send",
                                     layout=widgets.Layout(width="540px", height="56px"))
        self.send_button = widgets.Button(description="Send", button_style="primary",
                                          icon="paper-plane")
        self.clear_button = widgets.Button(description="Clear", icon="eraser")
        self.show_template = widgets.ToggleButton(value=False, description="Show the template",
                                                  icon="code",
                                                  # A button is 148 px unless told: the label
                                                  # would be cut to "Show the tem...".
                                                  layout=widgets.Layout(width="auto"))
        self.message = widgets.HTML()
        self.transcript = widgets.HTML(_box(""))
        self.template_box = widgets.HTML()
        self.add_class("chat-view")
        self.text.add_class("chat-input")
        self.send_button.add_class("chat-send")
        self.transcript.add_class("chat-transcript")

        self.send_button.on_click(lambda _: self.send())
        self.clear_button.on_click(lambda _: self.clear())
        self.show_template.observe(self._show_template, names="value")
        self.system.observe(self._show_template, names="value")
        super().__init__([
            self.system,
            widgets.HBox([self.temperature, self.top_p]),
            self.transcript,
            widgets.HBox([self.text, self.send_button, self.clear_button]),
            self.message,
            self.show_template,
            self.template_box,
        ])

    # ----- the template the model sees ---------------------------------------------------------

    def messages(self, user_text: str | None = None) -> list[dict]:
        """The conversation as the model gets it: system prompt, history, then user_text."""
        out = [{"role": "system", "content": self.system.value}] if self.system.value else []
        out += self.history
        if user_text is not None:
            out.append({"role": "user", "content": user_text})
        return out

    def render(self, messages: list[dict]) -> str:
        if self.template_kind == "plain":
            return assistant.render_plain_chat(messages)
        from course_lib.chat import apply_chat_template

        return apply_chat_template(messages, add_generation_prompt=True)

    def encode(self, messages: list[dict]) -> list[int]:
        if self.template_kind == "plain":
            return assistant.encode_plain_chat(self.tokenizer, messages)
        from course_lib.chat import encode_chat

        return encode_chat(self.tokenizer, messages, add_generation_prompt=True)

    def _stream(self, messages: list[dict]) -> Iterator[str]:
        params = SamplingParams(temperature=self.temperature.value,
                                top_p=self.top_p.value if self.top_p.value < 1.0 else None,
                                max_new_tokens=self.max_new_tokens, seed=self.seed)
        if self._stream_fn is not None:
            return self._stream_fn(messages, params=params)
        if self.template_kind == "plain":
            return assistant.stream_reply(self.model, self.tokenizer, messages, params=params)
        from course_lib.chat import stream_chat

        return stream_chat(self.model, self.tokenizer, messages, params=params)

    def _show_template(self, change=None) -> None:
        if not self.show_template.value:
            self.template_box.value = ""
            return
        if not self.prompt_ids:  # nothing sent yet: show what Send would give the model
            try:
                msgs = self.messages(self.text.value or "...")
                self.prompt_text, self.prompt_ids = self.render(msgs), self.encode(msgs)
            except ValueError as e:
                self.template_box.value = _warn(str(e))
                return
        pieces = "".join(
            f"<span title='id {i}' style='border:1px solid #ccc;margin:1px;padding:0 2px;"
            f"{_SPECIAL_STYLE if self._is_special(i) else ''}'>"
            f"{html.escape(self._piece(i))}</span>" for i in self.prompt_ids)
        self.template_box.value = (
            f"<b>The text the model is given</b> ({len(self.prompt_ids)} tokens):"
            f"<pre style='white-space:pre-wrap;background:#f6f6f6;padding:4px'>"
            f"{html.escape(self.prompt_text)}</pre><b>As tokens</b> (special tokens shaded; "
            f"hover for the id):<div style='line-height:1.9'>{pieces}</div>"
            f"<b>Token ids</b>:<pre style='white-space:pre-wrap'>{self.prompt_ids}</pre>")

    def _is_special(self, i: int) -> bool:
        return i in getattr(self.tokenizer, "special_tokens", {}).values()

    def _piece(self, i: int) -> str:
        return visible_piece(token_pieces(self.tokenizer, [i])[0])

    # ----- sending -----------------------------------------------------------------------------

    def _check(self, text: str) -> tuple[str | None, str]:
        """(error, note) for what the learner typed."""
        if not text.strip():
            return "Type a message first: the box is empty.", ""
        if len(text) > MAX_CHARS:
            return (f"That message is {len(text):,} characters; this view takes at most "
                    f"{MAX_CHARS:,}. Shorten it."), ""
        typed = [s for s in getattr(self.tokenizer, "special_tokens", {}) if s in text]
        typed += [s for s in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
                  if s in text and s not in typed]
        if typed:
            return None, (f"Your message contains {', '.join(typed)}. It is sent as plain text, "
                          "not as a special token, so it cannot end your turn or start a new "
                          "role (see 'Show the template').")
        return None, ""

    def _fit(self, text: str) -> tuple[list[dict], str | None]:
        """The messages to send, dropping the oldest turns until the prompt leaves room for
        the reply; an error if even the new message alone does not fit."""
        limit = self.model.config.block_size - self.max_new_tokens
        msgs = self.messages(text)
        while True:
            n = len(self.encode(msgs))
            if n <= limit:
                return msgs, None
            turns = [m for m in msgs if m["role"] != "system"]
            if len(turns) <= 1:
                return [], (f"That message makes a prompt of {n:,} tokens, but this model reads "
                            f"at most {self.model.config.block_size:,} and needs room for "
                            f"{self.max_new_tokens} new ones: at most {limit:,} for the "
                            "prompt. Shorten it, or the system prompt.")
            first = msgs.index(turns[0])
            msgs = msgs[:first] + msgs[first + 2:]  # one user turn and the reply to it

    def send(self, text: str | None = None) -> str | None:
        """Send the text box (or text), stream the reply into the transcript; returns the reply,
        or None with a message in the view when the input cannot be sent."""
        text = self.text.value if text is None else text
        error, note = self._check(text)
        if error is None:
            try:
                msgs, error = self._fit(text)
            except ValueError as e:
                error = str(e)
        if error is not None:
            self.message.value = _warn(error)
            return None
        self.message.value = _note(note) if note else ""
        self.gated = self.moderation is not None and not self.moderation.allows(text)
        if self.gated:
            self.message.value = _note("The moderation gate stopped this message: the model "
                                       "never saw it, and the reply is the gate's.")
            self.reply = GATE_REFUSAL
            self.history = self.history + [{"role": "user", "content": text},
                                           {"role": "assistant", "content": self.reply}]
            self.transcript.value = _box(_turns(self.history))
            self.text.value = ""
            return self.reply
        self.prompt_text, self.prompt_ids = self.render(msgs), self.encode(msgs)
        self._show_template()
        shown = [m for m in self.history] + [{"role": "user", "content": text}]
        self.send_button.disabled = True
        self.reply, self.first_piece_seconds = "", None
        start = time.perf_counter()
        try:
            for piece in self._stream(msgs):
                if self.first_piece_seconds is None:
                    self.first_piece_seconds = time.perf_counter() - start
                self.reply += piece
                self.transcript.value = _box(_turns(shown) + _reply(self.reply, done=False))
        except ValueError as e:
            self.message.value = _warn(f"The model could not answer: {e}")
            self.transcript.value = _box(_turns(self.history))
            return None
        finally:
            self.send_button.disabled = False
        if not self.reply.strip():
            self.reply = ""
        self.history = shown + [{"role": "assistant", "content": self.reply}]
        self.transcript.value = _box(_turns(self.history))
        self.text.value = ""
        return self.reply

    def clear(self) -> None:
        """Forget the conversation."""
        self.history, self.reply, self.prompt_ids, self.prompt_text = [], "", [], ""
        self.transcript.value = _box("")
        self.message.value = ""
        self._show_template()


_SPECIAL_STYLE = "background:#ffe3b3;font-weight:bold"


def _pick_template(tokenizer, template: str) -> str:
    if template not in ("auto", "chatml", "plain"):
        raise ValueError(f"template must be 'auto', 'chatml' or 'plain', got {template!r}")
    if template != "auto":
        return template
    return "chatml" if "<|im_start|>" in getattr(tokenizer, "special_tokens", {}) else "plain"


def _turns(messages: list[dict]) -> str:
    out = []
    for m in messages:
        if m["role"] == "user":
            out.append("<div class='chat-user' style='text-align:right;margin:4px'><span "
                       "style='background:#dbeafe;padding:3px 8px;border-radius:8px;"
                       f"white-space:pre-wrap'>{html.escape(m['content'])}</span></div>")
        elif m["role"] == "assistant":
            out.append(_reply(m["content"], done=True))
    return "".join(out)


def _reply(text: str, done: bool) -> str:
    shown = html.escape(text) if text or not done else "<i>(an empty reply)</i>"
    return (f"<div class='chat-reply{' chat-done' if done else ''}' style='margin:4px'><span "
            "style='background:#f1f1f1;padding:3px 8px;border-radius:8px;white-space:pre-wrap'>"
            f"{shown}{'' if done else ' &#9612;'}</span></div>")


def _box(inner: str) -> str:
    return ("<div style='width:640px;min-height:60px;max-height:360px;overflow-y:auto;"
            f"border:1px solid #ddd;padding:4px;font-size:13px'>{inner}</div>")


def _warn(text: str) -> str:
    return f'<span style="color:#b3261e">{html.escape(text)}</span>'


def _note(text: str) -> str:
    return f'<span style="color:#555">{html.escape(text)}</span>'
