"""plotly's FigureWidget, made light: the browser loads plotly.js once per page, not per figure.

plotly's own FigureWidget is an anywidget whose front end (`_esm`) is a 5 MB bundle holding
plotly.js, sent over the kernel's websocket for every figure and again on every page reload.
This subclass sends a stub of a few hundred bytes instead. The stub imports the installed
plotly's bundle from this Jupyter server (widgets.server serves it as a cacheable static file)
and hands over to it, so everything else is plotly's: the same Python API, the same front end,
click events included.

Importing this module creates one hidden widget, the loader. Its front end starts importing
plotly.js at once, so that the first figure of a lesson does not wait the second or so that
takes; and where the server does not serve the bundle (an editor that is not JupyterLab, or the
server extension not enabled) it asks the kernel for it, once per page. The figures only wait
for the page's one copy: a figure cannot ask for it itself, because anywidget holds a model's
messages until its front end has started, and that front end needs the bundle.
"""

from __future__ import annotations

from typing import Any

import anywidget
import plotly.graph_objects as go

from widgets.server import bundle_path, bundle_url_path

# One loader per page (globalThis), whichever widget's front end runs first.
_LOADER = """
const KEY = "__courseWidgetsPlotly";
function loader() {
  let l = globalThis[KEY];
  if (!l) {
    l = globalThis[KEY] = {};
    l.source = new Promise((resolve) => { l.give = resolve; });
    let base = "/";
    const config = document.getElementById("jupyter-config-data");
    if (config) base = JSON.parse(config.textContent).baseUrl || "/";
    l.fromServer = import(new URL(base + "BUNDLE_URL", location.origin).href);
    const fromKernel = () => l.source.then((source) =>
      import(URL.createObjectURL(new Blob([source], { type: "text/javascript" }))));
    l.bundle = l.fromServer.catch(fromKernel).then((m) => m.default);
  }
  return l;
}
""".replace("BUNDLE_URL", bundle_url_path())

_FIGURE_ESM = _LOADER + """
// plotly's default export is a factory that keeps one figure's state: call it once per model.
export default () => {
  let widget;
  const get = async () => {
    if (!widget) { const b = await loader().bundle; widget = typeof b === "function" ? b() : b; }
    return widget;
  };
  return {
    async initialize(ctx) { return (await get()).initialize?.(ctx); },
    async render(ctx) { return (await get()).render?.(ctx); },
  };
};
"""

_LOADER_ESM = _LOADER + """
export default {
  initialize({ model }) {
    // Not awaited: this model must take messages at once, the bundle among them.
    const l = loader();
    model.on("msg:custom", (msg) => { if (msg && msg.type === "bundle") l.give(msg.source); });
    l.fromServer.catch(() => model.send({ type: "bundle?" }));
  },
};
"""


class _PlotlyLoader(anywidget.AnyWidget):
    """A widget with no view: its front end loads plotly.js for every figure (see the module)."""

    _esm = _LOADER_ESM

    def __init__(self) -> None:
        super().__init__()
        self.on_msg(self._on_custom_message)

    def _on_custom_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "bundle?":
            self.send({"type": "bundle", "source": bundle_path().read_text(encoding="utf-8")})


LOADER = _PlotlyLoader()


class FigureWidget(go.FigureWidget):
    """plotly.graph_objects.FigureWidget, with plotly.js fetched once per page (see the module)."""

    _esm = _FIGURE_ESM

    def __repr__(self) -> str:
        # ipywidgets puts repr(view) into the text/plain of every display of a view, cut to
        # 110 characters; plotly's repr pretty-prints every number of the figure first, 0.15 s
        # for the head explorer's grid on each display.
        return f"FigureWidget({', '.join(trace.type for trace in self.data)})"
