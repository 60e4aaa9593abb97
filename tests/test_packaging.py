"""The environments we publish stay in step: Binder installs what the tests ran with."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s+#]+)", line.strip())
        if m:
            found[m.group(1).lower()] = m.group(2)
    return found


def test_binder_pins_match_requirements():
    main, binder = pins(ROOT / "requirements.txt"), pins(ROOT / "binder" / "requirements.txt")
    assert binder["torch"] == main["torch"]
    test_only = {"pytest", "pytest-xdist", "nbval", "nbclient", "nbformat", "playwright", "ruff"}
    assert {k: v for k, v in main.items() if k not in test_only} == binder


def test_binder_python_is_311():
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_shipped_assets_fit_in_10_mb():
    assets = ROOT / "course_lib" / "assets"
    assert sum(p.stat().st_size for p in assets.iterdir()) < 10 * 1024 * 1024


def test_readme_lesson_table_gives_each_lessons_own_time():
    """The README's table and each lesson's title cell state the same time (they drifted)."""
    import json

    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| \[.*\| (\d+) min \|$", readme, flags=re.M))
    lessons = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    assert len(table) == len(lessons) == 14
    for path in lessons:
        title = "".join(json.loads(path.read_text())["cells"][0]["source"])
        minutes = re.search(r"\*\*Time:\*\* about (\d+) minutes", title).group(1)
        assert table[str(int(path.name[:2]))] == minutes, path.name
