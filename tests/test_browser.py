"""Every lesson, run in a real JupyterLab in Debian's Chromium, driven by Playwright.

Checks that every cell runs without an error, that the widgets render, and that moving the
sampling lab's temperature (lesson 8) and the head explorer's head (lesson 5) changes what is
drawn. A screenshot of each lesson is saved to test-artifacts/browser/ for inspection.
Skipped, with the reason, where Chromium or Playwright is missing; COURSE_REQUIRE_BROWSER=1
(set by .ci/run) turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CELL_TIMEOUT_S = 900  # a whole Run All; lessons 7 and 8 took over 300 s on a loaded 2-core machine
# What a lesson's Run All may send over the websockets, both ways: the data, not plotly.js.
WEBSOCKET_LIMIT_BYTES = 1_000_000
# Without these, Chromium tries to reach Google's services, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    return None


reason = _missing()
if reason:
    if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"browser tests are required here but cannot run: {reason}")
    pytest.skip(reason, allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1, a free port, no token, throwaway settings."""
    tmp = tmp_path_factory.mktemp("jupyter")
    port = _free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), HF_HUB_OFFLINE="1")
    # Serve a copy: JupyterLab saves notebooks after running them, and the committed lessons
    # must stay exactly as they are. docs/ beside them holds the benchmark figures lesson 7 reads.
    root = tmp / "course"
    shutil.copytree(ROOT / "lessons", root / "lessons")
    shutil.copytree(ROOT / "docs", root / "docs")
    settings = tmp / "settings"
    # No news or update checks: they would reach for the network and pop up toasts.
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings") \
        .write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Keep every cell in the page, so the test can see all of them.
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings") \
        .write_text(json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "docmanager-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings") \
        .write_text(json.dumps({"autosave": False}))
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={tmp / 'workspaces'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start; see {tmp / 'lab.log'}:\n"
                            + (tmp / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
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


def _set_slider(page, label: str, value: str) -> None:
    """Type a value into the readout of the ipywidgets slider whose description is `label`."""
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=label))
    assert slider.count() >= 1, f"no slider labelled {label!r} in the page"
    readout = slider.first.locator(".widget-readout")
    readout.scroll_into_view_if_needed()
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


class _Traffic:
    """Counts the bytes of every websocket frame a page sends or receives."""

    def __init__(self, page) -> None:
        self.bytes = 0
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:
        ws.on("framesent", self._count)
        ws.on("framereceived", self._count)

    def _count(self, payload) -> None:
        self.bytes += len(payload.encode() if isinstance(payload, str) else payload)


def _report(lesson: str, **figures) -> None:
    """Adds a lesson's figures to test-artifacts/browser/traffic.json, for the record."""
    path = ARTIFACTS / "traffic.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table[lesson] = figures
    path.write_text(json.dumps(table, indent=1, sort_keys=True))
    print(lesson, figures)


def _run_all(page, url: str, lesson: str) -> tuple[int, float]:
    """Open a lesson, clear it, run every cell; return how many cells did not run, and how
    many seconds Run All took."""
    page.goto(f"{url}/lab/tree/lessons/{lesson}?reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    _wait_for_kernel(page)
    # Clear the committed outputs first, so a finished cell is one that ran in this browser.
    _menu(page, "Edit", "Clear Outputs of All Cells")
    _menu(page, "Run", "Run All Cells")
    start = time.time()
    prompts = "Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))"
    # The run has started once some cell is queued or numbered ...
    page.wait_for_function(f"() => {prompts}.some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))",
                           timeout=60_000, polling=200)
    # ... and is over when nothing is queued and the kernel is idle. After an error the
    # remaining cells go back to [ ], which the caller reports.
    page.wait_for_function(
        f"""() => {{
            const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return !{prompts}.some(p => p.textContent.includes('*'))
                && status && status.dataset.status === 'idle';
        }}""",
        timeout=CELL_TIMEOUT_S * 1000, polling=500,
    )
    seconds = time.time() - start
    return page.evaluate(
        f"() => {prompts}.filter(p => !/\\[\\d+\\]/.test(p.textContent)).length"), seconds


def _wait_for_kernel(page) -> None:
    """Waits until the notebook's kernel is connected and idle, as the status bar says.

    On a slow machine JupyterLab may ask which kernel to use while the kernel starts: accept
    its suggestion (the notebook's own kernel).
    """
    page.wait_for_function(
        """() => {
            const dialog = document.querySelector('.jp-Dialog');
            if (dialog && /Select Kernel/.test(dialog.textContent)) {
                dialog.querySelector('.jp-mod-accept')?.click();
                return false;
            }
            const bar = document.querySelector('#jp-main-statusbar');
            const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return bar && /\\|\\s*Idle/.test(bar.textContent)
                && indicator && indicator.dataset.status === 'idle';
        }""",
        timeout=180_000, polling=500,
    )


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


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-item", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_in_jupyterlab(lab_url, browser, lesson):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    traffic = _Traffic(page)
    try:
        not_run, run_all_s = _run_all(page, lab_url, lesson)
        _report(lesson, websocket_bytes=traffic.bytes, run_all_s=round(run_all_s, 1))
        # JupyterLab renders errors as stderr; a traceback marks a real one.
        stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
        tracebacks = [t for t in stderr.all_inner_texts() if re.search(r"Traceback|\w+Error\b", t)]
        assert not tracebacks, f"{lesson}: a cell failed:\n{tracebacks[0][-2000:]}"
        assert not_run == 0, f"{lesson}: {not_run} cells did not run"
        widgets = page.locator(".jp-OutputArea-output .jupyter-widgets")
        assert widgets.count() > 0, f"{lesson}: no widget rendered"
        broken = page.get_by_text("Error displaying widget")
        assert broken.count() == 0, f"{lesson}: a widget failed to render"
        assert traffic.bytes <= WEBSOCKET_LIMIT_BYTES, \
            f"{lesson}: Run All sent {traffic.bytes:,} bytes over the websockets"

        if lesson.startswith("07"):
            # A run started with the button can be stopped with Stop.
            _set_slider(page, "steps", "3000")
            page.locator("button", has_text=re.compile("^Train$")).first.click()
            stop = page.locator("button", has_text=re.compile("^Stop$")).first
            page.wait_for_function("b => !b.disabled", arg=stop.element_handle(),
                                   timeout=120_000, polling=250)
            stop.click()
            page.get_by_text(re.compile(r"stopped: \d+ steps")).first.wait_for(timeout=120_000)
        if lesson.startswith("08"):
            # The lab shows what the lesson's code set last: temperature 1, top-k 0, top-p 1.
            lab = page.locator(".widget-vbox", has=page.locator(".widget-label",
                                                                has_text="top-p")).last
            assert (_readout(lab, "temperature"), _readout(lab, "top-k (0 = off)"),
                    _readout(lab, "top-p (1 = off)")) == ("1.00", "0", "1.0")
            lab.scroll_into_view_if_needed()
            lab.screenshot(path=str(ARTIFACTS / "sampling_lab.png"))  # README's picture
            before = _plot_data(page)
            assert before, "lesson 8 shows no plotly graph"
            _set_slider(page, "temperature", "0.1")
            assert _wait_for_plots_to_change(page, before), \
                "moving the temperature slider did not change the distribution shown"
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
        if lesson.startswith("12"):
            # A message typed into the shipped model's chat view and sent gets a whole reply.
            view = page.locator(".chat-view").nth(1)
            view.scroll_into_view_if_needed()
            view.locator(".chat-input textarea").fill(
                "A play or Python's docs?\nTo be, or not to be")
            view.locator("button.chat-send").click()
            replies = view.locator(".chat-transcript .chat-reply.chat-done")
            page.wait_for_function("([el, n]) => el.querySelectorAll("
                                   "'.chat-transcript .chat-reply.chat-done').length >= n",
                                   arg=[view.element_handle(), 2], timeout=120_000, polling=250)
            assert replies.count() == 2
            last = replies.last.inner_text().strip()
            assert last and last != "(an empty reply)", "the chat view's reply is empty"
            # The README's picture of the chat view.
            view.screenshot(path=str(ARTIFACTS / "chat_view.png"))
        if lesson.startswith("06"):
            # The model explorer draws every stage; its block slider moves through the stack.
            assert page.get_by_text(re.compile(r"^\d+ blocks$")).count() > 0, \
                "lesson 6 shows no model explorer diagram"
            before = _plot_data(page)
            assert before, "lesson 6 shows no plotly graph"
            _set_slider(page, "block", "0")
            assert _wait_for_plots_to_change(page, before), \
                "moving the explorer's block slider did not change what it draws"
        if lesson.startswith("05"):
            before = _plot_data(page)
            assert before, "lesson 5 shows no plotly graph"
            _set_slider(page, "head", "2")
            assert _wait_for_plots_to_change(page, before), \
                "changing the head did not change the heatmap"
            # Clicking a head in the grid moves the explorer to it, on its first tab.
            explorer = page.locator(".jupyter-widget-tab, .widget-tab") \
                .filter(has_text="all heads").first
            _click_head_in_grid(page, layer=1, head=3)
            page.wait_for_function(
                """(el) => Array.from(el.querySelectorAll('.widget-slider')).map(
                    s => s.textContent).join('|').match(/layer\\s*1.*head\\s*3/s)""",
                arg=explorer.element_handle(), timeout=60_000, polling=250)
            assert (_readout(explorer, "layer"), _readout(explorer, "head")) == ("1", "3")
    finally:
        page.screenshot(path=str(ARTIFACTS / f"{lesson.removesuffix('.ipynb')}.png"),
                        full_page=False)
        page.close()


def test_reloading_a_page_with_two_lessons_open_renders_every_view(lab_url, browser):
    """Run two lessons in two tabs, save them, reload the page: every view comes back."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" on reload
    try:
        first, second = "03_positional_encoding.ipynb", "04_self_attention.ipynb"
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


def _run_in_open_page(page, url: str) -> None:
    """Open a lesson in the page (a new tab of the same JupyterLab) and run it all."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
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
