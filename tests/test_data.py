import pytest
import torch

from course_lib.data import VAL_PLAYS, clean_play, get_batch, load_corpus, load_play, play_names


def test_38_plays_and_a_named_validation_split():
    names = play_names()
    assert len(names) == 38
    assert set(VAL_PLAYS) <= set(names)
    val = load_corpus("val")
    train = load_corpus("train")
    assert load_play("macbeth") in val and load_play("macbeth") not in train
    assert load_play("hamlet") in train
    assert 4_000_000 < len(train) < 5_000_000 and 250_000 < len(val) < 400_000


def test_cleaning_gives_speaker_lines():
    md = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A heath.\n\n_Thunder. Enter three Witches_\n\n"
        "**FIRST WITCH**  \nWhen shall we three meet again  \n_\\[Aside]_  \n"
        "In thunder, lightning, or in rain?\n\n_Exeunt_\n\n"
        "_Enter DUNCAN, MALCOLM,\nand Attendants_\n\n**DUNCAN**  \nWhat bloody man is that?\n"
    )
    assert clean_play(md) == (
        "FIRST WITCH:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n\n"
        "DUNCAN:\nWhat bloody man is that?\n"
    )


def test_corpus_has_no_markdown_left():
    text = load_corpus("all")
    for marker in ("**", "_", "#", "\\["):
        assert marker not in text
    assert text.startswith("THESEUS:\nNow, fair Hippolyta")


def test_get_batch_targets_are_inputs_shifted_by_one():
    ids = torch.arange(100)
    x, y = get_batch(ids, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="block_size"):
        get_batch(torch.arange(5), 2, 8)


def test_unknown_play():
    with pytest.raises(ValueError, match="unknown play"):
        load_play("waiting-for-godot")


# ----- bad input ---------------------------------------------------------------------------------

BAD_BATCH = [
    ({"ids": [1, 2, 3] * 10}, TypeError, "tensor of integer token ids"),
    ({"ids": torch.arange(30.0)}, TypeError, "float32"),
    ({"ids": torch.ones(30, dtype=torch.bool)}, TypeError, "bool"),
    ({"ids": torch.arange(30).reshape(5, 6)}, ValueError, "1-D"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": -4}, ValueError, "batch_size"),
    ({"batch_size": 2.0}, TypeError, "batch_size"),
    ({"block_size": 0}, ValueError, "block_size"),
    ({"block_size": -1}, ValueError, "block_size"),
    ({"block_size": None}, TypeError, "block_size"),
    ({"block_size": 30}, ValueError, "more than block_size"),
    ({"generator": 0}, TypeError, "generator"),
    ({"device": "cuda:99"}, ValueError, "device"),
    ({"device": "gpu"}, ValueError, "device"),
]


@pytest.mark.parametrize("change, error, match", BAD_BATCH)
def test_get_batch_bad_input(change, error, match):
    args = {"ids": torch.arange(30), "batch_size": 2, "block_size": 4, **change}
    with pytest.raises(error, match=match):
        get_batch(**args)


def test_get_batch_takes_numpy_and_torch_sizes():
    import numpy as np

    x, _ = get_batch(torch.arange(30, dtype=torch.int32), np.int64(3), torch.tensor(4))
    assert x.shape == (3, 4) and x.dtype == torch.int32


@pytest.mark.parametrize("split, error", [("test", ValueError), (None, ValueError),
                                          (["train"], ValueError), ("TRAIN", ValueError)])
def test_load_corpus_bad_split(split, error):
    with pytest.raises(error, match="split must be one of"):
        load_corpus(split)


@pytest.mark.parametrize("name", [None, 3, ["hamlet"], "", "../hamlet"])
def test_load_play_bad_name(name):
    with pytest.raises(ValueError, match="unknown play"):
        load_play(name)


@pytest.mark.parametrize("markdown, error", [(None, TypeError), (b"**A**\nhi", TypeError)])
def test_clean_play_bad_input(markdown, error):
    with pytest.raises(error, match="markdown"):
        clean_play(markdown)


@pytest.mark.parametrize("modules, error, match", [
    (["no_such_module_xyz"], ValueError, "cannot import"), ([".relative"], ValueError, "import"),
    ([3], TypeError, "modules"), ([""], ValueError, "modules"),
])
def test_python_docs_text_bad_modules(modules, error, match):
    from course_lib.data import python_docs_text

    with pytest.raises(error, match=match):
        python_docs_text(modules)


def test_python_docs_text_one_module_by_name():
    from course_lib.data import python_docs_text

    assert python_docs_text("json") == python_docs_text(["json"])
