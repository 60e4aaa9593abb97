// The chat page: sends the conversation to this server and shows the reply as it streams.
// A chat model gets /v1/chat/completions with every message; a plain language model (not
// trained to chat) gets /v1/completions with the last message as the text to continue.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];  // {role, content} of every finished turn
let model = null;    // this server's entry of /v1/models
let controller = null;  // aborts the reply being streamed

function show(role, text) {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  div.textContent = text;
  $("messages").append(div);
  div.scrollIntoView({block: "end"});
  return div;
}

function settings() {
  return {
    temperature: Number($("temperature").value),
    top_p: Number($("top_p").value),
    max_tokens: Math.trunc(Number($("max_tokens").value)),
  };
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
}

// The stream's events, one parsed JSON object each, until "data: [DONE]".
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, end).replace(/^data: /, "");
      buffer = buffer.slice(end + 2);
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function send(text) {
  history.push({role: "user", content: text});
  show("user", text);
  const reply = show("assistant", "");
  const body = {model: model.id, stream: true, ...settings()};
  const route = model.chat ? "/v1/chat/completions" : "/v1/completions";
  if (model.chat) body.messages = history; else body.prompt = text;
  controller = new AbortController();
  busy(true);
  $("status").textContent = "writing…";
  let finish = null;
  try {
    const response = await fetch(route, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      const error = (await response.json()).error;
      throw new Error(`${response.status}: ${error.message}`);
    }
    for await (const chunk of events(response)) {
      const choice = chunk.choices[0];
      if (!choice) continue;
      reply.textContent += model.chat ? (choice.delta.content || "") : choice.text;
      finish = choice.finish_reason || finish;
      reply.scrollIntoView({block: "end"});
    }
    $("status").textContent = finish === "length" ? "stopped at max tokens" : "done";
  } catch (e) {
    if (e.name === "AbortError") {
      $("status").textContent = "stopped";  // the server frees the request when we hang up
    } else {
      reply.classList.add("error");
      reply.textContent = e.message;
      $("status").textContent = "";
    }
  } finally {
    if (reply.textContent && !reply.classList.contains("error")) {
      history.push({role: "assistant", content: reply.textContent});
    } else {
      history.pop();  // the turn failed: do not send it again
    }
    controller = null;
    busy(false);
  }
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller || !model) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());

fetch("/v1/models").then((r) => r.json()).then((list) => {
  model = list.data[0];
  $("model").textContent = `${model.id} (${model.chat ? "chat" : "text completion"}, ` +
    `${model.max_model_len} tokens of context)`;
  $("max_tokens").max = model.max_model_len - 1;
  if (!model.chat) $("max_tokens").value = 64;
});
