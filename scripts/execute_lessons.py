"""Execute lesson notebooks top to bottom in place, as they are committed.

Usage: python scripts/execute_lessons.py [lessons/NN_name.ipynb ...]   (default: all lessons)
Widget state is not stored: it would embed plotly's 5 MB widget bundle in every notebook.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path, out: Path | None = None, cwd: Path | None = None) -> float:
    """Run the notebook at path (in cwd, default its folder), write it with its outputs to out
    (default: in place)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd or path.parent)}},
        store_widget_state=False,
    )
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, out or path)
    return elapsed


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "lessons").glob("[0-9]*.ipynb"))
    for p in paths:
        print(f"{p.name}: {execute(p):.1f} s, {p.stat().st_size / 1e3:.0f} kB", flush=True)
