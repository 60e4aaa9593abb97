"""JupyterLab on a copy of the lessons, driven from Debian's Chromium by Playwright.

Shared by the browser test (tests/test_browser.py) and the README's pictures
(scripts/take_screenshots.py): how the server starts, how Chromium is launched, and how a
lesson is opened and run, live here once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
CELL_TIMEOUT_S = 900  # a whole Run All; lessons 8 and 9 took over 300 s on a loaded 2-core machine
# Without these, Chromium tries to reach Google's services, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def missing() -> str | None:
    """Why the browser cannot run here (Chromium or Playwright absent), or None."""
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(tmp: Path, serve_bundle: bool = True) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1, a free port, no token, throwaway settings in `tmp`;
    yields its URL. Raises RuntimeError, with the end of its log, if it does not start.
    serve_bundle=False switches off the server extension that serves plotly.js (widgets.server),
    as in an editor that is not JupyterLab."""
    port = _free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), HF_HUB_OFFLINE="1")
    if not serve_bundle:
        (tmp / "config").mkdir(parents=True, exist_ok=True)
        (tmp / "config" / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": {"widgets.server": False}}}))
    # Serve a copy: JupyterLab saves notebooks after running them, and the committed lessons
    # must stay exactly as they are. docs/ beside them holds the benchmark figures lesson 8 reads.
    root = tmp / "course"
    shutil.copytree(ROOT / "lessons", root / "lessons")
    shutil.copytree(ROOT / "docs", root / "docs")
    settings = tmp / "settings"
    # No news or update checks: they would reach for the network and pop up toasts.
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings") \
        .write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Keep every cell in the page, so the test can see all of them; record when the kernel
    # started and finished each cell (saved in the cell's metadata, read by measure_views.py).
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings") \
        .write_text(json.dumps({"windowingMode": "none", "recordTiming": True}))
    (settings / "@jupyterlab" / "docmanager-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings") \
        .write_text(json.dumps({"autosave": False}))
    # The light theme, whatever the user's own settings say (the README's pictures use it).
    (settings / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings") \
        .write_text(json.dumps({"theme": "JupyterLab Light"}))
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
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {tmp / 'lab.log'}:\n"
                                       + (tmp / "lab.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def launch_chromium(playwright):
    """Debian's Chromium, headless, kept off the network."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=CHROMIUM_ARGS)


def menu(page, menu: str, item: str) -> None:
    """Click `item` in JupyterLab's menu `menu`."""
    page.locator(".lm-MenuBar-item", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def wait_for_kernel(page) -> None:
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


# What counts as one part of a view in a cell's output: a widget or a plotly graph. Run All's
# count and a re-run's must agree, so both watchers below use this one selector.
_VIEW_PARTS = ("'.jp-OutputArea-output .jupyter-widgets, "
               ".jp-OutputArea-output .js-plotly-plot'")

# Watches the notebook while it runs: when each code cell got its number (its reply came) and
# when a widget or a plotly graph last appeared in its output. Run All executes the cells in
# order, so a cell starts when the code cell before it finished.
_WATCH_CELLS = """() => {
    const cells = () => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'));
    const w = window.__courseCells = {start: performance.now(), done: {}, shown: {}, parts: {}};
    const look = () => {
        const now = performance.now();
        cells().forEach((cell, i) => {
            const prompt = cell.querySelector('.jp-InputPrompt');
            if (w.done[i] === undefined && prompt && /\\[\\d+\\]/.test(prompt.textContent))
                w.done[i] = now;
            const parts = cell.querySelectorAll(VIEW_PARTS).length;
            if (parts > (w.parts[i] || 0)) { w.parts[i] = parts; w.shown[i] = now; }
        });
    };
    // At most one look every 50 ms: a plotly graph makes thousands of mutations, and a look
    // per mutation (every cell, every view) cost Chromium seconds of CPU per lesson.
    let pending = false;
    new MutationObserver(() => {
        if (!pending) { pending = true; setTimeout(() => { pending = false; look(); }, 50); }
    }).observe(document.querySelector('.jp-Notebook'),
        {childList: true, subtree: true, characterData: true});
}""".replace("VIEW_PARTS", _VIEW_PARTS)

_VIEW_CELL_TIMES = """() => {
    const w = window.__courseCells, out = [];
    const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'));
    for (const key of Object.keys(w.shown)) {
        const i = Number(key);
        const before = Object.keys(w.done).map(Number).filter(j => j < i).map(j => w.done[j]);
        const start = before.length ? Math.max(...before) : w.start;
        const line = cells[i]?.querySelector('.cm-line')?.textContent || '';
        out.push({cell: i, code: line.slice(0, 60), reply_s: w.done[i] === undefined ? null
                                    : Math.round(w.done[i] - start) / 1000,
                  rendered_s: Math.round(w.shown[i] - start) / 1000, parts: w.parts[i]});
    }
    return out.sort((a, b) => a.cell - b.cell);
}"""


def run_all(page, url: str, lesson: str) -> tuple[int, float]:
    """Open a lesson, clear it, run every cell; return how many cells did not run, and how
    many seconds Run All took. view_cell_times(page) then tells how long each view took."""
    page.goto(f"{url}/lab/tree/lessons/{lesson}?reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    wait_for_kernel(page)
    # Clear the committed outputs first, so a finished cell is one that ran in this browser.
    menu(page, "Edit", "Clear Outputs of All Cells")
    page.evaluate(_WATCH_CELLS)
    menu(page, "Run", "Run All Cells")
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


def view_cell_times(page) -> list[dict]:
    """After run_all: each code cell that shows a view (its index among the code cells and its
    first line), with the seconds from its start to its reply (`reply_s`, the kernel's work)
    and to the last part of its view appearing in the page (`rendered_s`), and how many parts
    (widgets and plotly graphs) it shows. Measured, not asserted: a shared machine's timings
    say little (scripts/measure_views.py times views on a quiet machine)."""
    return page.evaluate(_VIEW_CELL_TIMES)


# Watches code cell i from now: when its prompt gets a new number (the reply), when its output
# last changed, and how many views it shows.
_WATCH_RERUN = """(i) => {
    const cell = document.querySelectorAll('.jp-Notebook .jp-CodeCell')[i];
    const prompt = cell.querySelector('.jp-InputPrompt');
    const w = window.__courseRerun = {start: Date.now(), before: prompt.textContent,
                                      reply: null, changed: null, parts: 0};
    const look = () => {
        const now = Date.now();
        if (w.reply === null && /\\[\\d+\\]/.test(prompt.textContent)
                && prompt.textContent !== w.before) w.reply = now;
        w.changed = now;
        w.parts = cell.querySelectorAll(VIEW_PARTS).length;
    };
    w.observer = new MutationObserver(look);
    w.observer.observe(cell, {childList: true, subtree: true, characterData: true,
                              attributes: true});
}""".replace("VIEW_PARTS", _VIEW_PARTS)

_RERUN_SETTLED = """([parts, quiet]) => {
    const w = window.__courseRerun;
    // A cell may show less on a second run (a progress bar for a model already loaded).
    return w.reply !== null && Date.now() - w.changed > quiet
        && (w.parts >= parts || Date.now() - w.reply > 5000);
}"""


def rerun_cell(page, i: int, parts: int, quiet_ms: int = 500) -> tuple[float, float]:
    """Run code cell i alone, as a learner going back to it; return the seconds from the key
    press to its reply and to its output settling (unchanged for `quiet_ms`). Raises
    RuntimeError, with what the cell shows, if it shows fewer than `parts` views (widgets and
    plotly graphs) than before."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(i)
    # A view's text box or slider readout may hold the keyboard: take it back first.
    page.evaluate("() => document.activeElement?.blur()")
    cell.locator(".jp-InputPrompt").click()  # selects the cell
    page.wait_for_function(
        "(cell) => cell.classList.contains('jp-mod-active')"
        " && cell.closest('.jp-Notebook').classList.contains('jp-mod-commandMode')"
        " && cell.closest('.jp-Notebook').contains(document.activeElement)",
        arg=cell.element_handle(), timeout=30_000, polling=100)
    page.evaluate(_WATCH_RERUN, i)
    page.keyboard.press("Control+Enter")
    page.wait_for_function(_RERUN_SETTLED, arg=[parts, quiet_ms], timeout=120_000, polling=100)
    reply, settled, shown = page.evaluate(
        "() => { const w = window.__courseRerun; w.observer.disconnect();"
        " return [w.reply - w.start, w.changed - w.start, w.parts]; }")
    if shown < parts:
        text = cell.locator(".jp-OutputArea").inner_text().strip().replace("\n", " ")
        raise RuntimeError(f"code cell {i} showed {shown} of its {parts} views when run again: "
                           f"{text[:300]!r}")
    return reply / 1000, settled / 1000


def set_slider(scope, label: str, value: str) -> None:
    """Type `value` into the readout of the first slider labelled exactly `label` in `scope`
    (a page or a locator), then Enter, as a learner would."""
    page = getattr(scope, "page", scope)  # a Locator knows its page; a Page is one
    slider = scope.locator(".widget-slider", has=page.locator(
        ".widget-label", has_text=re.compile(f"^{re.escape(label)}$")))
    assert slider.count() >= 1, f"no slider labelled {label!r} here"
    readout = slider.first.locator(".widget-readout")
    readout.scroll_into_view_if_needed()
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def send_chat(view, text: str, replies: int) -> str:
    """Type `text` into a chat view, send it, wait until it shows `replies` whole replies;
    return the last reply's text."""
    view.scroll_into_view_if_needed()
    view.locator(".chat-input textarea").fill(text)
    view.locator("button.chat-send").click()
    view.page.wait_for_function("([el, n]) => el.querySelectorAll("
                                "'.chat-transcript .chat-reply.chat-done').length >= n",
                                arg=[view.element_handle(), replies], timeout=120_000,
                                polling=250)
    return view.locator(".chat-transcript .chat-reply.chat-done").last.inner_text().strip()
