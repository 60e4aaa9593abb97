"""BlockTableView: moving the step slider redraws the blocks; a finished or cancelled request's
blocks go back to free or cached; a shared prompt prefix shows as shared."""

import pytest

from course_lib.engine import Engine, record_schedule
from course_lib.sampling import SamplingParams
from widgets.block_table_view import CACHED, FREE, SHARED, BlockTableView, block_label

SYSTEM = list(range(1, 14))  # 13 tokens: three full blocks of 4, shared by A and C


@pytest.fixture
def frames(small_model):
    p = SamplingParams(max_new_tokens=3, temperature=0)
    schedule = {0: [("add", SYSTEM + [20], p, "A"),
                    ("add", [30, 31, 32], SamplingParams(max_new_tokens=9, temperature=0), "B")],
                1: [("add", SYSTEM + [40], p, "C")],
                4: [("cancel", "B")]}
    engine = Engine(small_model, max_batch_size=3, kv_block_size=4, num_kv_blocks=16)
    return engine, record_schedule(engine, schedule)


def test_snapshots_follow_the_engine(frames):
    engine, frames = frames
    first = frames[0]["blocks"]
    assert first.count(("A",)) == 4 and first.count(("B",)) == 1
    assert frames[0]["tables"] == {"A": [0, 1, 2, 3], "B": [4]}
    shared = [o for o in frames[1]["blocks"] if isinstance(o, tuple) and len(o) == 2]
    assert shared == [("A", "C")] * 3  # C reuses A's three full prompt blocks
    assert frames[4]["events"][0] == "B: cancelled"
    end = frames[-1]["blocks"]
    assert all(o in ("free", "cached") for o in end) and "cached" in end
    assert engine.block_snapshot() == end
    assert engine.stats().prefix_cache_hits_total == 3


def test_moving_the_slider_changes_what_is_drawn(frames):
    _, frames = frames
    view = BlockTableView(frames, columns=4)
    drawn = list(view.figure.data[0].marker.color)
    assert drawn.count(view.colours["A"]) == 4 and drawn.count(FREE) == 16 - 5
    assert "A" in view.table.value and "[0, 1, 2, 3]" in view.table.value
    view.step.value = 1
    assert view.shown is frames[1]
    assert list(view.figure.data[0].marker.color).count(SHARED) == 3
    assert list(view.figure.data[0].text)[:3] == ["A+C"] * 3
    view.step.value = len(frames) - 1  # everyone finished or was cancelled
    colours = list(view.figure.data[0].marker.color)
    assert set(colours) <= {FREE, CACHED} and CACHED in colours
    assert "B" not in view.table.value.split("waiting")[0]
    assert view.figure.layout.title.text.startswith(f"step {len(frames) - 1}: 0 blocks in use")


def test_labels_and_bad_input(small_model):
    assert block_label(("A", "C")) == "A+C" and block_label("free") == ""
    with pytest.raises(ValueError, match="record_schedule"):
        BlockTableView([])
    with pytest.raises(ValueError, match="unknown action"):
        record_schedule(Engine(small_model, num_kv_blocks=8), {0: [("oops",)]})
