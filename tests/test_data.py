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
