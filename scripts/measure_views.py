"""How long does a learner wait for a view? Time each view cell in JupyterLab, in Chromium.

    python scripts/measure_views.py                          # every lesson
    python scripts/measure_views.py 05_multi_head_attention  # only some
    python scripts/measure_views.py --repeats 5

For each lesson: Run All (so everything a view needs is in the kernel), then run each cell that
shows a view again, alone, on a quiet kernel, `--repeats` times, and time it from the key press
to the view fully drawn (nothing in its output changed for 0.5 s afterwards). That is split into
the kernel's own time (JupyterLab's recorded timing of the last run: from the kernel starting
the cell to its reply) and the rest: messages, the browser building widgets and plotly
drawing. The reference, run the same way in the same page, is a cell showing one plain
ipywidgets slider: what Jupyter itself costs. A cell whose Run All took over 5 s in the kernel
is computing, not only showing (training, loading a model): it is listed, not re-run.
`first s` is the view's first showing, during Run All: from the kernel starting the cell to its
last view appearing in the page, with the browser not yet warm and still drawing
the cells before it.

Reports, asserts nothing: a shared machine's timings say little. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jupyterlab_browser import (  # noqa: E402
    jupyterlab,
    launch_chromium,
    menu,
    missing,
    rerun_cell,
    run_all,
    view_cell_times,
)

COMPUTING_S = 5.0
REFERENCE = "import ipywidgets; ipywidgets.IntSlider(description='reference')"


def _kernel_times(notebook: Path) -> list[tuple[float, float] | None]:
    """Each code cell's (start, end) in the kernel, in seconds since the epoch, from the timing
    JupyterLab recorded in its metadata."""
    out = []
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        timing = cell["metadata"].get("execution", {})
        try:
            out.append(tuple(datetime.fromisoformat(timing[k].replace("Z", "+00:00")).timestamp()
                             for k in ("iopub.execute_input", "shell.execute_reply")))
        except KeyError:
            out.append(None)
    return out


def _seconds(span: tuple[float, float] | None) -> float | None:
    return None if span is None else span[1] - span[0]


def _save(page) -> None:
    menu(page, "File", "Save Notebook")
    page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=30_000)


def _add_reference_cell(page) -> int:
    """Append the reference cell at the end of the notebook; return its code-cell index."""
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    cells.last.locator(".jp-InputPrompt").click()
    page.keyboard.press("b")  # a new cell below, selected
    page.keyboard.press("Enter")  # edit it
    page.keyboard.type(REFERENCE)
    page.keyboard.press("Escape")
    return cells.count() - 1


def measure(browser, url: str, lesson: str, notebook: Path, repeats: int) -> list[dict]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        not_run, _ = run_all(page, url, lesson)
        if not_run:
            raise RuntimeError(f"{lesson}: {not_run} cells did not run")
        views = view_cell_times(page)
        # When each view cell's views last grew during Run All, in seconds since the epoch.
        shown = page.evaluate("() => Object.fromEntries(Object.entries(window.__courseCells"
                              ".shown).map(([i, t]) => [i, (performance.timeOrigin + t) / 1000]))")
        _save(page)
        run_all_times = _kernel_times(notebook)
        kernel = [_seconds(t) for t in run_all_times]
        rows = []
        for v in views + [{"cell": _add_reference_cell(page), "code": REFERENCE}]:
            i = v["cell"]
            row = {"cell": i, "code": v["code"]}
            if str(i) in shown and i < len(run_all_times) and run_all_times[i]:
                # The view's first showing in this page, during Run All: nothing warm yet.
                row["first_s"] = round(shown[str(i)] - run_all_times[i][0], 2)
            if i < len(kernel) and kernel[i] is not None and kernel[i] > COMPUTING_S:
                rows.append(row | {"computing_s": round(kernel[i], 2)})
                continue
            try:
                times = [rerun_cell(page, i, v.get("parts") or 1) for _ in range(repeats)]
            except RuntimeError as e:
                rows.append(row | {"skipped": str(e)})
                continue
            _save(page)
            row |= {"reply_s": round(statistics.median(t[0] for t in times), 2),
                    "drawn_s": round(statistics.median(t[1] for t in times), 2),
                    "kernel_s": round(_seconds(_kernel_times(notebook)[i]), 2)}
            rows.append(row)
        return rows
    finally:
        page.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson names (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if reason := missing():
        print(reason)
        return 1
    from playwright.sync_api import sync_playwright

    names = sorted(p.name for p in (ROOT / "lessons").glob("[0-9]*.ipynb")
                   if not args.lessons or any(p.stem.startswith(a.removesuffix(".ipynb"))
                                              for a in args.lessons))
    print(f"{'lesson':<28} {'cell':>4}  {'drawn s':>7} {'reply s':>7} {'kernel s':>8} "
          f"{'first s':>7}  code")
    with tempfile.TemporaryDirectory() as tmp, jupyterlab(Path(tmp)) as url, \
            sync_playwright() as p:
        browser = launch_chromium(p)
        for name in names:
            notebook = Path(tmp) / "course" / "lessons" / name
            for r in measure(browser, url, name, notebook, args.repeats):
                if "skipped" in r:
                    print(f"{name[:28]:<28} {r['cell']:>4}  skipped: {r['skipped']}", flush=True)
                elif "computing_s" in r:
                    print(f"{name[:28]:<28} {r['cell']:>4}  computing: {r['computing_s']} s in "
                          f"the kernel, not re-run  {r['code'][:40]}", flush=True)
                else:
                    first = f"{r['first_s']:7.2f}" if "first_s" in r else f"{'-':>7}"
                    print(f"{name[:28]:<28} {r['cell']:>4}  {r['drawn_s']:7.2f} {r['reply_s']:7.2f}"
                          f" {r['kernel_s']:8.2f} {first}  {r['code'][:40]}", flush=True)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
