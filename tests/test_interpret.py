import torch

from course_lib.interpret import (
    attention_maps,
    hidden_states,
    next_token_probs_with_heads,
    top_tokens,
)


class Digits:
    def decode(self, ids):
        return "".join(str(i % 10) for i in ids)


def test_attention_maps_match_the_model(small_model):
    ids = torch.randint(0, 97, (12,))
    maps = attention_maps(small_model, ids)
    assert maps.shape == (2, 4, 12, 12)
    _, _, weights = small_model(ids[None], return_attention=True)
    assert torch.allclose(maps[1], weights[1][0])
    assert torch.allclose(maps.sum(-1), torch.ones(2, 4, 12), atol=1e-5)


def test_hidden_states_end_in_the_logits(small_model):
    ids = torch.randint(0, 97, (9,))
    states = hidden_states(small_model, ids)
    assert len(states) == 3 and states[0].shape == (9, 32)
    logits = small_model.lm_head(small_model.transformer.ln_f(states[-1]))
    assert torch.allclose(logits, small_model(ids[None])[0][0], atol=1e-5)
    emb = small_model.transformer.wte(ids) + small_model.transformer.wpe(torch.arange(9))
    assert torch.allclose(states[0], emb)


def test_switching_heads_off_changes_the_prediction(small_model):
    ids = torch.randint(0, 97, (10,))
    full = next_token_probs_with_heads(small_model, ids)
    assert torch.allclose(full, torch.softmax(small_model(ids[None])[0][0, -1], -1))
    mask = torch.ones(2, 4)
    assert torch.allclose(next_token_probs_with_heads(small_model, ids, mask), full)
    mask[:, :] = 0
    assert not torch.allclose(next_token_probs_with_heads(small_model, ids, mask), full)


def test_top_tokens():
    probs = torch.tensor([0.1, 0.6, 0.3])
    rows = top_tokens(probs, Digits(), k=2)
    assert [(p, round(v, 3)) for p, v in rows] == [("1", 0.6), ("2", 0.3)]


def test_visible_piece_shows_spaces_newlines_and_empty_tokens():
    from course_lib.interpret import visible_piece

    assert visible_piece(" king\n") == "·king↵"
    assert visible_piece("") == "∅"
