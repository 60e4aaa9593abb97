"""Retake the README's pictures of the views (docs/*.png) in JupyterLab, in Chromium.

    python scripts/take_screenshots.py                  # all three
    python scripts/take_screenshots.py sampling_lab     # only some

Starts JupyterLab on a copy of the lessons and Debian's Chromium (the browser test's start-up,
tests/jupyterlab_browser.py), runs the lesson behind each picture, sets the view as the README
describes it, and saves the view alone, cropped to what it draws, in the light theme at twice
the pixel density (sharp on any screen, well under 1 MB).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jupyterlab_browser import (  # noqa: E402
    jupyterlab,
    launch_chromium,
    missing,
    run_all,
    send_chat,
    set_slider,
    wait_for_kernel,
)

# The union of what a view draws (text, controls, graphs), inside the view's own box: ipywidgets
# boxes are as wide as the page, which would leave a wide empty margin on the right.
_DRAWN_BOX = """(root) => {
    const outer = root.getBoundingClientRect();
    const atomic = new Set(['svg', 'canvas', 'input', 'textarea', 'select', 'button', 'img',
                            'table', 'pre']);
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    const walk = (el) => {
        const style = getComputedStyle(el);
        if (style.display === 'none' || style.visibility === 'hidden') return;
        const tag = el.tagName.toLowerCase();
        const leaf = atomic.has(tag) || el.classList.contains('js-plotly-plot')
            || el.classList.contains('widget-readout')
            || (el.children.length === 0 && el.textContent.trim());
        if (leaf) {
            const r = el.getBoundingClientRect();
            if (r.width > 0 && r.height > 0) {
                x0 = Math.min(x0, r.left); y0 = Math.min(y0, r.top);
                x1 = Math.max(x1, r.right); y1 = Math.max(y1, r.bottom);
            }
            return;
        }
        for (const child of el.children) walk(child);
    };
    walk(root);
    const pad = 6;
    const left = Math.max(outer.left, x0 - pad), top = Math.max(outer.top, y0 - pad);
    return {x: left, y: top, width: Math.min(outer.right, x1 + pad) - left,
            height: Math.min(outer.bottom, y1 + pad) - top};
}"""


def _view_of(page, source_start: str):
    """The view shown by the code cell whose source begins with `source_start`."""
    cell = page.locator(".jp-CodeCell").filter(has=page.locator(
        ".jp-InputArea-editor", has_text=re.compile(f"^\\s*{re.escape(source_start)}")))
    assert cell.count() == 1, f"{cell.count()} cells start with {source_start!r}"
    return cell.locator(".jp-OutputArea-output .widget-box").first  # the outermost box


def _wait_for_text(view, pattern: str) -> None:
    view.page.wait_for_function("([el, p]) => new RegExp(p).test(el.textContent)",
                                arg=[view.element_handle(), pattern], timeout=180_000,
                                polling=250)


def sampling_lab(page):
    """Lesson 9's lab as Run All leaves it: the shipped model, every filter off."""
    return _view_of(page, "lab = SamplingLab(")


def model_explorer(page):
    """Lesson 6's explorer on SmolLM2: 'The capital of France is', block 28, head 4."""
    view = _view_of(page, "explorer = ModelExplorer(")
    view.locator(".widget-dropdown select").first.select_option(label="SmolLM2-135M")
    _wait_for_text(view, r"30 blocks")
    box = view.locator(".widget-text input").first
    box.fill("The capital of France is")
    box.press("Enter")
    _wait_for_text(view, r"5 tokens\.")
    set_slider(view, "block", "28")
    set_slider(view, "head", "4")
    _wait_for_text(view, r"block 28, head 4")
    return view


def chat_view(page):
    """Lesson 13's chat with the shipped model after DPO: a second question, a line of Hamlet."""
    view = page.locator(".chat-view").nth(1)
    send_chat(view, "A play or Python's docs?\nTo be, or not to be", replies=2)
    return view


SHOTS = {  # picture, named as the module of its view (widgets/<name>.py) -> (lesson, setting)
    "sampling_lab": ("09_decoding.ipynb", sampling_lab),
    "model_explorer": ("06_transformer_block.ipynb", model_explorer),
    "chat_view": ("13_assistant.ipynb", chat_view),
}


def _version(path: Path) -> str:
    """The last commit of a file, and whether it has changed since (what a picture shows)."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "log", "-1", "--format=%h", "--", str(path)],
                            capture_output=True, text=True).stdout.strip() or "?"
    changed = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", str(path)]).returncode
    return commit + (" with uncommitted changes" if changed else "")


def take(browser, url: str, name: str, out: Path) -> Path:
    lesson, prepare = SHOTS[name]
    page = browser.new_page(viewport={"width": 1400, "height": 2200}, device_scale_factor=2)
    try:
        not_run, seconds = run_all(page, url, lesson)
        if not_run:
            raise RuntimeError(f"{lesson}: {not_run} cells did not run")
        view = prepare(page)
        wait_for_kernel(page)
        # No text cursor in a readout, no plotly toolbar shown because the mouse is over a graph.
        page.evaluate("() => document.activeElement?.blur()")
        page.mouse.move(0, 0)
        # Mid-panel, away from the notebook's toolbar and its border.
        view.evaluate("el => el.scrollIntoView({block: 'center'})")
        clip = view.evaluate(_DRAWN_BOX)
        path = out / f"{name}.png"
        page.screenshot(path=str(path), clip=clip)
        print(f"{path}: {path.stat().st_size:,} bytes, {lesson} ran in {seconds:.0f} s, "
              f"widgets/{name}.py at {_version(ROOT / 'widgets' / f'{name}.py')}")
        return path
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(SHOTS)} (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    unknown = set(args.names) - set(SHOTS)
    if unknown:
        parser.error(f"no such picture: {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(SHOTS)}")
    reason = missing()
    if reason:
        sys.exit(reason)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, jupyterlab(Path(tmp)) as url, \
            sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            for name in args.names or list(SHOTS):
                take(browser, url, name, args.out)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
