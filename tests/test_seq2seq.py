"""The encoder-decoder Transformer equals torch.nn.Transformer; its BERT encoder equals MiniLM."""

import pytest
import torch
from torch import nn

from course_lib.attention import CrossAttention
from course_lib.seq2seq import Seq2Seq, Seq2SeqConfig

ATOL = 1e-5


def torch_pair(norm_first: bool, activation: str):
    """A small torch.nn.Transformer in eval mode and ours with its weights."""
    torch.manual_seed(0)
    theirs = nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=3,
                            dim_feedforward=48, dropout=0.0, activation=activation,
                            batch_first=True, norm_first=norm_first).eval()
    ours = Seq2Seq.from_torch(theirs, vocab_size=11, block_size=16).eval()
    return theirs, ours


def padded_batch():
    src, tgt = torch.randn(3, 7, 32), torch.randn(3, 5, 32)
    keep = torch.arange(7)[None] < torch.tensor([7, 4, 2])[:, None]  # True = real token
    return src, tgt, keep


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")  # torch's note on norm_first=True
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_and_decoder_equal_torch_transformer(norm_first, activation):
    theirs, ours = torch_pair(norm_first, activation)
    src, tgt, keep = padded_batch()
    causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
    memory_t = theirs.encoder(src, src_key_padding_mask=~keep)
    memory = ours.encoder(src, keep)
    # padding rows are not compared: torch's fast path may leave them zero
    torch.testing.assert_close(memory[keep], memory_t[keep], atol=ATOL, rtol=0)
    out_t = theirs.decoder(tgt, memory_t, tgt_mask=causal, memory_key_padding_mask=~keep,
                           tgt_is_causal=True)
    torch.testing.assert_close(ours.decoder(tgt, memory, keep), out_t, atol=ATOL, rtol=0)
    whole = theirs(src, tgt, tgt_mask=causal, src_key_padding_mask=~keep,
                   memory_key_padding_mask=~keep)
    torch.testing.assert_close(ours.decoder(tgt, ours.encoder(src, keep), keep), whole,
                               atol=ATOL, rtol=0)


def test_padding_changes_nothing_for_the_real_tokens():
    _, ours = torch_pair(False, "relu")
    src, _, keep = padded_batch()
    alone = ours.encoder(src[1:2, :4])
    torch.testing.assert_close(ours.encoder(src, keep)[1:2, :4], alone, atol=ATOL, rtol=0)


def small_model(**kw) -> Seq2Seq:
    torch.manual_seed(1)
    config = dict(vocab_size=13, tgt_vocab_size=17, block_size=12, n_embd=32, n_head=4,
                  n_encoder_layer=2, n_decoder_layer=2, norm_first=True, position="learned")
    return Seq2Seq(Seq2SeqConfig(**{**config, **kw})).eval()


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_cached_decoding_equals_uncached_logits(position):
    model = small_model(position=position)
    src = torch.randint(0, 13, (2, 9))
    tgt = torch.randint(0, 17, (2, 6))
    keep = torch.arange(9)[None] < torch.tensor([9, 5])[:, None]
    with torch.no_grad():
        memory = model.encode(src, keep)
        full = model.decode(tgt, memory, keep)
        cache = model.new_cache(memory, keep)
        steps = [model.decode(tgt[:, :2], None, cache=cache)]  # a prompt of two, then one by one
        steps += [model.decode(tgt[:, t:t + 1], None, cache=cache) for t in range(2, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)


def test_cache_reorder_follows_beams():
    model = small_model()
    src, tgt = torch.randint(0, 13, (2, 5)), torch.randint(0, 17, (2, 4))
    with torch.no_grad():
        memory = model.encode(src)
        cache = model.new_cache(memory)
        model.decode(tgt[:, :3], None, cache=cache)
        cache.reorder([1, 1, 0])
        step = model.decode(tgt[[1, 1, 0], 3:], None, cache=cache)
        full = model.decode(tgt[[1, 1, 0]], memory[[1, 1, 0]])
    torch.testing.assert_close(step[:, 0], full[:, -1], atol=ATOL, rtol=0)


def test_forward_loss_and_training_step():
    model = small_model().train()
    src, tgt = torch.randint(0, 13, (4, 7)), torch.randint(0, 17, (4, 5))
    targets = tgt.clone()
    targets[:, -1] = -1  # skipped
    logits, loss = model(src, tgt, targets)
    assert logits.shape == (4, 5, 17) and loss.ndim == 0
    loss.backward()
    assert model.src_embed.weight.grad is not None
    assert model.decoder.h[0].cross_attn.c_attn.weight.grad.abs().sum() > 0


def test_shared_vocabulary_ties_three_tables(tmp_path):
    model = small_model(tgt_vocab_size=None)
    assert model.tgt_embed is None and model.lm_head.weight is model.src_embed.weight
    model.save(tmp_path / "m.safetensors", dtype=torch.float16)
    again = Seq2Seq.load(tmp_path / "m.safetensors")
    assert again.lm_head.weight is again.src_embed.weight
    src, tgt = torch.randint(0, 13, (1, 4)), torch.randint(0, 13, (1, 3))
    torch.testing.assert_close(again(src, tgt)[0], model(src, tgt)[0], atol=1e-3, rtol=0)


def test_bad_inputs_are_named():
    model = small_model()
    with pytest.raises(ValueError, match="block size"):
        model.encode(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model.encode(torch.full((1, 3), 13))
    with pytest.raises(ValueError, match="n_head"):
        Seq2SeqConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="activation"):
        Seq2SeqConfig(activation="tanh")
    with pytest.raises(ValueError, match="memory"):
        CrossAttention(8, 2)(torch.randn(1, 2, 8))


def test_bert_encoder_equals_minilm_token_embeddings():
    from course_lib.bert import encoder_from_bert
    from course_lib.embeddings import load_sentence_model

    st = load_sentence_model("cpu")
    hf = st[0].auto_model
    ours = encoder_from_bert(hf)
    texts = ["The cat sat on the mat.", "Attention is all you need, they said in 2017."]
    batch = st.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        ref = hf(**batch).last_hidden_state
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(got[keep], ref[keep], atol=1e-4, rtol=0)
    # and sentence-transformers' own output_value="token_embeddings" (unpadded, per text)
    for i, tokens in enumerate(st.encode(texts, output_value="token_embeddings")):
        torch.testing.assert_close(got[i, : len(tokens)], tokens.cpu(), atol=1e-4, rtol=0)


# ----- the translation task and the shipped translator ------------------------------------------

@pytest.fixture(scope="module")
def split():
    from course_lib.translation import translation_split

    return translation_split()


@pytest.fixture(scope="module")
def translator():
    from course_lib.pretrained import load_translator

    return load_translator()


def test_translation_split_is_deterministic_and_disjoint(split):
    from course_lib.translation import number_pair

    train, held_out = split
    assert len(train) == 9000 and len(held_out) == 1000
    assert not {a for a, _ in train} & {a for a, _ in held_out}
    assert held_out[:2] == [("twenty", "vingt"), ("thirty-one", "trente et un")]
    assert number_pair(97) == ("ninety-seven", "quatre-vingt-dix-sept")


def test_tokenizer_round_trip_and_batch(tmp_path, split):
    from course_lib.translation import BOS, EOS, PAD, TranslationTokenizer, make_batch

    tok = TranslationTokenizer.from_pairs(split[0])
    tok.save(tmp_path / "t.json")
    again = TranslationTokenizer.load(tmp_path / "t.json")
    ids = again.encode("quatre-vingts")
    assert min(ids) > EOS and again.decode([BOS, *ids, EOS, PAD, 5]) == "quatre-vingts"
    with pytest.raises(ValueError, match="not in this CharTokenizer"):
        tok.encode("42")
    src, src_mask, tgt, targets = make_batch(tok, [("one", "un"), ("twenty", "vingt")])
    assert src.shape == (2, 6) and src_mask[0].tolist() == [True] * 3 + [False] * 3
    assert tgt[0, 0] == BOS and targets[0].tolist()[2:] == [EOS, -1, -1, -1]


def test_shipped_translator_held_out_exact_match(translator, split):
    import random

    from course_lib.translation import evaluate_translator

    model, tok = translator
    sample = random.Random(0).sample(split[1], 200)  # numbers never seen in training
    scores = evaluate_translator(model, tok, sample)
    assert scores["exact_match"] >= 0.9, scores
    assert scores["chrf"] >= 95, scores


def test_beam_search_is_not_worse_than_greedy(translator, split):
    from course_lib.translation import evaluate_translator, translate

    model, tok = translator
    sample = split[1][::25]  # 40 held-out pairs: beam search runs one text at a time
    greedy = evaluate_translator(model, tok, sample)["exact_match"]
    beam = evaluate_translator(model, tok, sample, num_beams=3)["exact_match"]
    assert beam >= greedy - 0.05
    assert translate(model, tok, "ninety-seven", num_beams=1) == "quatre-vingt-dix-sept"
    assert translate(model, tok, "ninety-seven", num_beams=3) == "quatre-vingt-dix-sept"


@pytest.mark.parametrize("text, num_beams, match", [
    ("", 1, "non-empty"), ("   ", 2, "non-empty"), ("ninety-seven!", 1, "'!'"),
    ("forty-two", 0, "num_beams"), ("two " * 20, 1, "reads at most"),
])
def test_translate_refuses_bad_input(translator, text, num_beams, match):
    from course_lib.translation import translate

    with pytest.raises(ValueError, match=match):
        translate(*translator, text, num_beams=num_beams)


def test_translator_card_documents_the_run():
    from course_lib.pretrained import translator_card

    card = translator_card()
    assert "scripts/train_translator.py" in card["command"]
    assert card["held_out_greedy"]["exact_match"] >= 0.9 and card["train_seconds"] > 0


def test_decoder_only_form_of_the_task():
    from course_lib.model import GPT, GPTConfig
    from course_lib.translation import (
        BOS,
        EOS,
        TranslationTokenizer,
        decoder_only_batch,
        exact_match,
        translate_decoder_only,
    )

    pairs = [("seven", "sept"), ("ninety-seven", "quatre-vingt-dix-sept")]
    tok = TranslationTokenizer.from_pairs(pairs)
    ids, targets = decoder_only_batch(tok, pairs)
    row = tok.encode("seven") + [BOS] + tok.encode("sept")
    assert ids[0, : len(row)].tolist() == row
    # only the French and <eos> are scored, each at the position before it
    assert (targets[0, :5] == -1).all()
    assert targets[0, 5:10].tolist() == tok.encode("sept") + [EOS]
    assert (targets[0, 10:] == -1).all()
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2,
                        n_embd=16))
    got = translate_decoder_only(gpt, tok, ["seven", "ninety-seven"], max_new_tokens=5)
    assert len(got) == 2 and all(isinstance(g, str) and len(g) <= 5 for g in got)
    assert exact_match(["sept", "x"], ["sept", "huit"]) == 0.5
    with pytest.raises(ValueError):
        exact_match([], [])


def test_train_on_pairs_seed_fixes_the_run_with_dropout():
    from course_lib.train import TrainConfig
    from course_lib.translation import TranslationTokenizer, make_batch, train_on_pairs

    pairs = [("seven", "sept"), ("eight", "huit"), ("nine", "neuf"), ("ten", "dix")]
    tok = TranslationTokenizer.from_pairs(pairs)
    config = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-2, warmup_steps=1,
                         device="cpu")

    def loss_of(model, batch):
        src, src_mask, tgt, targets = make_batch(tok, batch)
        return model(src, tgt, targets, src_mask=src_mask)[1]

    def run(torch_seed: int, seed: int) -> list[float]:
        model = small_model(vocab_size=tok.vocab_size, tgt_vocab_size=None, dropout=0.3)
        torch.manual_seed(torch_seed)  # where the caller's generator stands: no matter
        before = torch.random.get_rng_state()
        losses, _ = train_on_pairs(model, loss_of, pairs, config, seed=seed, log_every=0)
        assert torch.equal(torch.random.get_rng_state(), before)
        return losses

    assert run(1, seed=5) == run(2, seed=5)
    assert run(1, seed=5) != run(1, seed=6)
