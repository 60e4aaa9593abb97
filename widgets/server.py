"""A Jupyter server extension that serves plotly's widget bundle as a static, cacheable file.

Without it every plotly FigureWidget sends its own 5 MB copy of plotly.js over the kernel's
websocket. With it, the browser fetches the installed plotly's own bundle once per page, over
plain HTTP from this server (no CDN, no network), and the kernel sends only the figure's data.
It is enabled by jupyter-config/course_widgets.json, which `pip install -e .` places in
`{sys.prefix}/etc/jupyter/jupyter_server_config.d/`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

URL_PREFIX = "course-widgets"
BUNDLE = "widgetbundle.js"


def bundle_path() -> Path:
    """The installed plotly's anywidget bundle (plotly.js and its widget front end)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise RuntimeError("plotly is not installed")
    return Path(spec.origin).parent / "package_data" / BUNDLE


def bundle_url_path() -> str:
    """The bundle's path under the server's base URL; the plotly version in the query makes it
    safe to cache for as long as the browser likes."""
    return f"{URL_PREFIX}/{BUNDLE}?v={importlib.metadata.version('plotly')}"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "widgets.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.base.handlers import FileFindHandler
    from jupyter_server.utils import url_path_join

    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], URL_PREFIX, r"(widgetbundle[.]js)")
    web_app.add_handlers(".*$", [(route, FileFindHandler, {"path": [str(bundle_path().parent)]})])
    serverapp.log.info("course widgets: serving plotly's widget bundle at /%s", URL_PREFIX)
