"""The README's ways of running the tests work, not only the full command: here the lessons
given alone to two pytest-xdist workers, which needs the top-level conftest.py."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_lesson_alone_on_two_workers_keeps_its_cells_together():
    lesson = "lessons/03_positional_encoding.ipynb"  # the shortest lesson
    cells = json.loads((ROOT / lesson).read_text())["cells"]
    code_cells = sum(c["cell_type"] == "code" for c in cells)
    # The outer run's xdist variables would describe the wrong run to the inner one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "-n", "2", "-q", "-p", "no:cacheprovider",
         lesson],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    # Cells dealt out to both workers fail on names defined in the other worker's kernel.
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(rf"\b{code_cells} passed\b", summary), summary
