"""Every lesson, run in a real JupyterLab in Debian's Chromium, driven by Playwright.

Checks that every cell runs without an error, that the widgets render, that moving the
sampling lab's temperature (lesson 9) and the head explorer's head (lesson 5) changes what is
drawn, and that each cell building a view, run again on its own after the whole lesson, shows
its view again. A screenshot of each lesson is saved to test-artifacts/browser/ for inspection, and
traffic.json there records each lesson's websocket bytes, its Run All time and, for each view
cell, the seconds from its start to its reply and to its view rendering (reported, not asserted).
The start-up (JupyterLab, Chromium, Run All) is tests/jupyterlab_browser.py, which
scripts/take_screenshots.py shares.
Skipped, with the reason, where Chromium or Playwright is missing; COURSE_REQUIRE_BROWSER=1
(set by .ci/run) turns that skip into a failure.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import re
import time

import pytest
from jupyterlab_browser import (
    CELL_TIMEOUT_S,
    ROOT,
    jupyterlab,
    launch_chromium,
    missing,
    rerun_cell,
    run_all,
    send_chat,
    view_cell_times,
)
from jupyterlab_browser import menu as _menu
from jupyterlab_browser import set_slider as _set_slider
from jupyterlab_browser import wait_for_kernel as _wait_for_kernel

from widgets.server import bundle_path

LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts" / "browser"
# What a lesson's Run All may send over the websockets, both ways: the data, not plotly.js.
WEBSOCKET_LIMIT_BYTES = 1_000_000


reason = missing()
if reason:
    if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"browser tests are required here but cannot run: {reason}")
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of the lessons (see jupyterlab_browser.jupyterlab):
    (its URL, the folder it serves)."""
    tmp = tmp_path_factory.mktemp("jupyter")
    with jupyterlab(tmp) as url:
        yield url, tmp / "course"


@pytest.fixture(scope="module")
def lab_url(lab):
    return lab[0]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def _plot_data(page) -> list[str]:
    """What every plotly graph on the page is drawing, as JSON, in page order."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
            el => JSON.stringify((el.data || []).map(t => [t.x, t.y, t.z])))"""
    )


def _wait_for_plots_to_change(page, before: list[str], timeout_s: float = 30) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if _plot_data(page) != before:
            return True
        page.wait_for_timeout(250)
    return False


def _assert_slider_redraws(page, lesson: str, label: str, value: str, failure: str) -> None:
    """Setting the slider labelled `label` to `value` changes what the lesson's graphs draw."""
    before = _plot_data(page)
    assert before, f"lesson {int(lesson[:2])} shows no plotly graph"
    _set_slider(page, label, value)
    assert _wait_for_plots_to_change(page, before), failure


def _wait_until_enabled(page, button, enabled: bool = True) -> None:
    """Wait (up to 2 minutes) until a widget button is enabled, or disabled."""
    page.wait_for_function("b => !b.disabled" if enabled else "b => b.disabled",
                           arg=button.element_handle(), timeout=120_000, polling=250)


class _Traffic:
    """Counts the bytes of every websocket frame a page sends or receives."""

    def __init__(self, page) -> None:
        self.bytes = 0
        # Where the bytes go, for the report: (direction, message type) -> bytes.
        self.by_kind: collections.Counter = collections.Counter()
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:
        ws.on("framesent", lambda payload: self._count("sent", payload))
        ws.on("framereceived", lambda payload: self._count("received", payload))

    def _count(self, direction: str, payload) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.bytes += len(data)
        # Text or binary, a Jupyter frame carries its header as JSON text.
        kind = re.search(rb'"msg_type":\s*"(\w+)"', data)
        name = kind.group(1).decode() if kind else "other"
        if name == "comm_msg":  # which widget message: plotly's js2py echoes, state updates...
            method = re.search(rb'"method":\s*"(\w+)"', data)
            key = re.search(rb'"state":\s*\{\s*"(\w+)"', data)
            name += ":" + (method.group(1).decode() if method else "?") + (
                ":" + key.group(1).decode() if key else "")
        self.by_kind[f"{direction} {name}"] += len(data)


def _report(lesson: str, **figures) -> None:
    """Adds a lesson's figures to test-artifacts/browser/traffic.json, for the record."""
    path = ARTIFACTS / "traffic.json"
    # Locked: on pytest-xdist workers two lessons may report at once.
    with open(ARTIFACTS / "traffic.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = json.loads(path.read_text()) if path.exists() else {}
        table[lesson] = figures
        path.write_text(json.dumps(table, indent=1, sort_keys=True))
    print(lesson, figures)


def _tracebacks(page) -> list[str]:
    """The errors the page's cells show: JupyterLab renders them as stderr, and a traceback
    marks a real one (a warning is stderr too)."""
    stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
    return [t for t in stderr.all_inner_texts() if re.search(r"Traceback|\w+Error\b", t)]


def _readout(scope, label: str) -> str:
    """The readout of the slider labelled exactly `label` inside `scope`."""
    slider = scope.locator(".widget-slider",
                           has=scope.page.locator(".widget-label",
                                                  has_text=re.compile(f"^{re.escape(label)}$")))
    return slider.first.locator(".widget-readout").inner_text()


def _click_head_in_grid(page, layer: int, head: int) -> None:
    """Click the map of one head in the head explorer's "all heads" grid, as a learner would."""
    explorer = page.locator(".jupyter-widget-tab, .widget-tab").filter(has_text="all heads").first
    explorer.locator(".lm-TabBar-tab", has_text="all heads").click()
    grid = explorer.locator(".js-plotly-plot", has=page.locator(".gtitle", has_text="every head"))
    grid.wait_for(state="visible", timeout=60_000)
    x, y = grid.evaluate(
        """(el, [layer, head]) => {
            const fl = el._fullLayout, rect = el.getBoundingClientRect();
            const nHeads = fl.xaxis.ticktext.length, width = el.data[0].z[0].length;
            const T = (width - (nHeads - 1)) / nHeads;  // one map, then a gap of one cell
            const cx = head * (T + 1) + T / 2, cy = layer * (T + 1) + T / 2;
            return [rect.left + fl.xaxis._offset + fl.xaxis.d2p(cx),
                    rect.top + fl.yaxis._offset + fl.yaxis.d2p(cy)];
        }""",
        [layer, head],
    )
    page.mouse.click(x, y)


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_in_jupyterlab(lab_url, browser, lesson):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    traffic = _Traffic(page)
    try:
        not_run, run_all_s = run_all(page, lab_url, lesson)
        view_cells = view_cell_times(page)
        # For the record only (no time is asserted): the machine may be shared and loaded.
        _report(lesson, websocket_bytes=traffic.bytes, run_all_s=round(run_all_s, 1),
                view_cells=view_cells, largest_kinds=dict(traffic.by_kind.most_common(8)))
        tracebacks = _tracebacks(page)
        assert not tracebacks, f"{lesson}: a cell failed:\n{tracebacks[0][-2000:]}"
        assert not_run == 0, f"{lesson}: {not_run} cells did not run"
        widgets = page.locator(".jp-OutputArea-output .jupyter-widgets")
        assert widgets.count() > 0, f"{lesson}: no widget rendered"
        broken = page.get_by_text("Error displaying widget")
        assert broken.count() == 0, f"{lesson}: a widget failed to render"
        assert traffic.bytes <= WEBSOCKET_LIMIT_BYTES, \
            f"{lesson}: Run All sent {traffic.bytes:,} bytes over the websockets"

        if lesson.startswith("07_original"):
            # The cross-attention view: another head draws another map.
            _assert_slider_redraws(page, lesson, "head", "2",
                                   "changing the cross-attention head did not change the map")
        if lesson.startswith("08_training"):
            # A run started with the button can be stopped with Stop.
            _set_slider(page, "steps", "3000")
            page.locator("button", has_text=re.compile("^Train$")).first.click()
            stop = page.locator("button", has_text=re.compile("^Stop$")).first
            _wait_until_enabled(page, stop)
            stop.click()
            page.get_by_text(re.compile(r"stopped: \d+ steps")).first.wait_for(timeout=120_000)
            # Kernel > Interrupt stops a run too (3000 steps would take many minutes), and
            # leaves the kernel idle, not dead.
            train = page.locator("button", has_text=re.compile("^Train$")).first
            _wait_until_enabled(page, train)
            train.click()
            _wait_until_enabled(page, stop)
            _menu(page, "Kernel", "Interrupt Kernel")
            _wait_until_enabled(page, stop, enabled=False)
            assert page.get_by_text(re.compile(r"stopped: \d+ steps")).count() == 1
            _wait_for_kernel(page)
        if lesson.startswith("09"):
            # The lab shows what the lesson's code set last: temperature 1, top-k 0, top-p 1.
            lab = page.locator(".widget-vbox", has=page.locator(".widget-label",
                                                                has_text="top-p")).last
            assert (_readout(lab, "temperature"), _readout(lab, "top-k (0 = off)"),
                    _readout(lab, "top-p (1 = off)")) == ("1.00", "0", "1.0")
            lab.scroll_into_view_if_needed()
            lab.screenshot(path=str(ARTIFACTS / "sampling_lab.png"))  # README's picture
            _assert_slider_redraws(
                page, lesson, "temperature", "0.1",
                "moving the temperature slider did not change the distribution shown")
        if lesson.startswith("02"):
            # Typing a sentence and clicking Add (the box's own submit fires too) adds it once.
            sentence = "A browser test adds this sentence"
            box = page.locator(".widget-text input[placeholder^='Add a sentence']").first
            box.scroll_into_view_if_needed()
            box.fill(sentence)
            page.locator("button", has_text=re.compile("^Add$")).first.click()
            page.get_by_text(f"Added: {sentence}").first.wait_for(timeout=60_000)
            _wait_for_kernel(page)
            # The map's points, by their full text (the hover text of the one scatter trace).
            options = page.evaluate(
                """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
                    .filter(el => /sentences: PCA/.test(el.textContent))
                    .flatMap(el => Array.from(el.data[0].hovertext || []))""")
            n = options.count(sentence)
            assert n == 1, f"the sentence was added {n} times"
        if lesson.startswith("13"):
            # A message typed into the shipped model's chat view and sent gets a whole reply.
            view = page.locator(".chat-view").nth(1)
            last = send_chat(view, "A play or Python's docs?\nTo be, or not to be", replies=2)
            assert view.locator(".chat-transcript .chat-reply.chat-done").count() == 2
            assert last and last != "(an empty reply)", "the chat view's reply is empty"
            # The README's picture of the chat view.
            view.screenshot(path=str(ARTIFACTS / "chat_view.png"))
        if lesson.startswith("06"):
            # The model explorer draws every stage; its block slider moves through the stack.
            assert page.get_by_text(re.compile(r"^\d+ blocks$")).count() > 0, \
                "lesson 6 shows no model explorer diagram"
            _assert_slider_redraws(
                page, lesson, "block", "0",
                "moving the explorer's block slider did not change what it draws")
        if lesson.startswith("05"):
            _assert_slider_redraws(page, lesson, "head", "2",
                                   "changing the head did not change the heatmap")
            # Clicking a head in the grid moves the explorer to it, on its first tab.
            explorer = page.locator(".jupyter-widget-tab, .widget-tab") \
                .filter(has_text="all heads").first
            _click_head_in_grid(page, layer=1, head=3)
            page.wait_for_function(
                """(el) => Array.from(el.querySelectorAll('.widget-slider')).map(
                    s => s.textContent).join('|').match(/layer\\s*1.*head\\s*3/s)""",
                arg=explorer.element_handle(), timeout=60_000, polling=250)
            assert (_readout(explorer, "layer"), _readout(explorer, "head")) == ("1", "3")
        # A learner going back: each cell that builds one of the course's views runs again on
        # its own, after the whole lesson (so with whatever later cells left in the kernel),
        # and shows its views again. Cells that compute for seconds (training) are left out.
        code_cells = page.locator(".jp-Notebook .jp-CodeCell")
        for cell in view_cells:
            source = code_cells.nth(cell["cell"]).locator(".jp-InputArea-editor").inner_text()
            if re.search(r"\b[A-Z]\w*(View|Explorer|Lab)\(", source) \
                    and cell["reply_s"] is not None and cell["reply_s"] < 5:
                rerun_cell(page, cell["cell"], cell["parts"])
        tracebacks = _tracebacks(page)
        assert not tracebacks, f"{lesson}: a re-run cell failed:\n{tracebacks[0][-2000:]}"
    finally:
        page.screenshot(path=str(ARTIFACTS / f"{lesson.removesuffix('.ipynb')}.png"),
                        full_page=False)
        page.close()


# Two notebooks holding one view each, as lessons 3 and 4 build them: the reload test needs the
# views, not the lessons' other cells (each lesson has run in full above).
RELOAD_NOTEBOOKS = {
    "reload_positions.ipynb": (
        "from course_lib.pretrained import load_pretrained\n"
        "from widgets.position_view import PositionView\n"
        "model, tokenizer = load_pretrained()\n"
        "PositionView(model.transformer.wpe.weight)"),
    "reload_attention.ipynb": (
        "from course_lib.pretrained import load_pretrained\n"
        "from widgets.attention_view import AttentionView\n"
        "model, tokenizer = load_pretrained()\n"
        "AttentionView(model, tokenizer, 'To be, or not to be, that is the question')"),
}


KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def test_reloading_a_page_with_two_notebooks_open_renders_every_view(lab, browser):
    """Run two notebooks with views in two tabs, save them, reload the page: every view comes
    back."""
    import nbformat

    lab_url, root = lab
    for name, code in RELOAD_NOTEBOOKS.items():
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        # Named like the lessons' kernel, or JupyterLab asks which kernel to start.
        notebook.metadata["kernelspec"] = KERNELSPEC
        nbformat.write(notebook, root / "lessons" / name)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" on reload
    try:
        first, second = RELOAD_NOTEBOOKS
        for lesson in (first, second):
            url = f"{lab_url}/lab/tree/lessons/{lesson}" + ("?reset" if lesson == first else "")
            _run_in_open_page(page, url)
            page.keyboard.press("Control+s")
            page.wait_for_function(
                "() => !document.querySelector('.lm-TabBar-tab.lm-mod-current.jp-mod-dirty')",
                timeout=60_000, polling=250)
        page.reload(wait_until="domcontentloaded")
        for lesson in (second, first):
            _wait_for_kernel(page)
            page.locator(".lm-TabBar-tab", has_text=lesson.removesuffix(".ipynb")[:12]) \
                .first.click(timeout=120_000)
            _wait_for_kernel(page)
            panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first
            views = panel.locator(".jp-OutputArea-output .jupyter-widgets")
            page.wait_for_function(
                """(panel) => panel.querySelectorAll('.jp-OutputArea-output .js-plotly-plot')
                    .length > 0""", arg=panel.element_handle(), timeout=120_000, polling=500)
            assert views.count() > 0, f"{lesson}: no view after the reload"
            text = panel.inner_text()
            assert "Error displaying widget" not in text and "model not found" not in text, \
                f"{lesson}: a view failed to come back after the reload"
    finally:
        page.screenshot(path=str(ARTIFACTS / "reload.png"), full_page=False)
        page.close()


def test_without_the_server_extension_the_kernel_sends_plotly_js_once(tmp_path, browser):
    """Where the server does not serve plotly's bundle (an editor that is not JupyterLab, the
    extension off), the loader widget asks the kernel for it: figures still draw, and the
    bundle crosses the websocket once per page however many figures there are."""
    import nbformat

    with jupyterlab(tmp_path, serve_bundle=False) as url:
        code = ("import plotly.graph_objects as go\n"
                "from widgets.figure import FigureWidget\n"
                "display(FigureWidget(data=[go.Bar(y=[1, 3, 2])]))\n"
                "display(FigureWidget(data=[go.Heatmap(z=[[1, 2], [3, 4]])]))")
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]),
                       tmp_path / "course" / "lessons" / "figures.ipynb")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        traffic = _Traffic(page)
        try:
            _run_in_open_page(page, f"{url}/lab/tree/lessons/figures.ipynb?reset")
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2",
                timeout=120_000, polling=250)
            size = bundle_path().stat().st_size
            assert size < traffic.bytes < 1.5 * size, (traffic.bytes, size)
        finally:
            page.close()


def _run_in_open_page(page, url: str) -> None:
    """Open a lesson in the page (a new tab of the same JupyterLab) and run it all."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # The page restores the notebooks open before it; the menus act on the current one.
    name = url.split("/")[-1].split("?")[0]
    page.locator(".lm-TabBar-tab.lm-mod-current", has_text=name).first.wait_for(timeout=120_000)
    _wait_for_kernel(page)
    _menu(page, "Edit", "Clear Outputs of All Cells")
    _menu(page, "Run", "Run All Cells")
    prompts = ("Array.from(document.querySelectorAll("
               "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt'))")
    page.wait_for_function(f"() => {prompts}.some(p => /\\[\\d+\\]/.test(p.textContent))",
                           timeout=120_000, polling=250)
    page.wait_for_function(f"() => !{prompts}.some(p => p.textContent.includes('*'))",
                           timeout=CELL_TIMEOUT_S * 1000, polling=500)
    _wait_for_kernel(page)
