"""plotly's FigureWidget, made light: the browser loads plotly.js once per page, not per figure.

plotly's own FigureWidget is an anywidget whose front end (`_esm`) is a 5 MB bundle holding
plotly.js, sent over the kernel's websocket for every figure and again on every page reload.
This subclass sends a stub of a few hundred bytes instead. The stub imports the installed
plotly's bundle from this Jupyter server (widgets.server serves it as a cacheable static file)
and hands over to it, so everything else is plotly's: the same Python API, the same front end,
click events included. Where the server does not serve the bundle (an editor that is not
JupyterLab, or the server extension not enabled) the stub asks the kernel for it once per page.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from widgets.server import bundle_path, bundle_url_path

_KEY = "__courseWidgetsPlotly"
_STUB = """
const KEY = "%(key)s";
function fromServer() {
  let base = "/";
  const config = document.getElementById("jupyter-config-data");
  if (config) base = JSON.parse(config.textContent).baseUrl || "/";
  return import(new URL(base + "%(url)s", location.origin).href);
}
function fromKernel(model) {
  return new Promise((resolve, reject) => {
    const onMessage = (msg) => {
      if (!msg || msg.type !== "bundle") return;
      model.off("msg:custom", onMessage);
      const url = URL.createObjectURL(new Blob([msg.source], { type: "text/javascript" }));
      import(url).then(resolve, reject);
    };
    model.on("msg:custom", onMessage);
    model.send({ type: "bundle?" });
  });
}
function bundle(model) {
  if (!globalThis[KEY]) {
    globalThis[KEY] = fromServer().catch(() => fromKernel(model));
    globalThis[KEY].catch(() => { delete globalThis[KEY]; });
  }
  return globalThis[KEY].then((m) => m.default);
}
// plotly's default export is a factory that keeps one figure's state: call it once per model.
export default () => {
  let widget;
  const get = async (model) => {
    if (!widget) { const b = await bundle(model); widget = typeof b === "function" ? b() : b; }
    return widget;
  };
  return {
    async initialize(ctx) { return (await get(ctx.model)).initialize?.(ctx); },
    async render(ctx) { return (await get(ctx.model)).render?.(ctx); },
  };
};
"""


class FigureWidget(go.FigureWidget):
    """plotly.graph_objects.FigureWidget, with plotly.js fetched once per page (see the module)."""

    _esm = _STUB % {"key": _KEY, "url": bundle_url_path()}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_msg(self._on_custom_message)

    def _on_custom_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "bundle?":
            self.send({"type": "bundle", "source": bundle_path().read_text(encoding="utf-8")})
