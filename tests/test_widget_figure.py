"""widgets.figure and widgets.server: plotly.js reaches the browser once per page."""

import json
import re
from pathlib import Path

import ipywidgets
import plotly.graph_objects as go

from widgets.figure import LOADER, FigureWidget
from widgets.server import _load_jupyter_server_extension, bundle_path, bundle_url_path

ROOT = Path(__file__).resolve().parent.parent


def test_a_figure_sends_a_stub_not_plotly_js():
    figure = FigureWidget(data=[go.Bar(x=[1, 2], y=[3, 4])])
    assert isinstance(figure, go.FigureWidget)  # the whole plotly API, events included
    assert len(figure._esm) < 3_000 < 4_000_000 < bundle_path().stat().st_size
    assert bundle_url_path() in figure._esm
    # A figure never asks the kernel itself (its messages wait until it has the bundle): the
    # loader, created once on import, does.
    assert "msg:custom" not in figure._esm and "msg:custom" in LOADER._esm
    assert len(LOADER._esm) < 3_000 and bundle_url_path() in LOADER._esm
    assert re.fullmatch(r"course-widgets/widgetbundle\.js\?v=[\w.]+", bundle_url_path())
    assert figure.data[0].y == (3, 4)


def test_without_the_server_the_kernel_sends_the_bundle_on_request(monkeypatch):
    sent = []
    monkeypatch.setattr(LOADER, "send", lambda content, buffers=None: sent.append(content))
    LOADER._on_custom_message(LOADER, {"type": "something else"}, [])
    assert sent == []
    LOADER._on_custom_message(LOADER, {"type": "bundle?"}, [])
    assert sent[0]["type"] == "bundle"
    assert sent[0]["source"] == bundle_path().read_text(encoding="utf-8")


def test_the_server_extension_serves_the_installed_bundle():
    added = []

    class App:
        settings = {"base_url": "/user/someone/"}

        def add_handlers(self, host, handlers):
            added.extend(handlers)

    class Server:
        web_app = App()

        class log:  # noqa: N801
            info = staticmethod(lambda *args: None)

    _load_jupyter_server_extension(Server())
    (route, _handler, options), = added
    assert re.fullmatch(route, "/user/someone/course-widgets/widgetbundle.js")
    assert not re.fullmatch(route, "/user/someone/course-widgets/../secret")
    assert (Path(options["path"][0]) / "widgetbundle.js") == bundle_path()


def test_pip_install_enables_the_server_extension():
    config = json.loads((ROOT / "jupyter-config" / "course_widgets.json").read_text())
    assert config["ServerApp"]["jpserver_extensions"] == {"widgets.server": True}
    assert "jupyter-config/course_widgets.json" in (ROOT / "pyproject.toml").read_text()


def test_repr_names_the_traces_without_printing_their_numbers():
    # ipywidgets puts repr() in every display's text/plain: it must not walk a 50,000-cell map.
    figure = FigureWidget(data=[go.Heatmap(z=[[0.5] * 200] * 250), go.Bar(y=[1])])
    assert repr(figure) == "FigureWidget(heatmap, bar)"
    shown = ipywidgets.VBox([figure])._repr_mimebundle_()["text/plain"]
    assert shown == "VBox(children=(FigureWidget(heatmap, bar),))"
