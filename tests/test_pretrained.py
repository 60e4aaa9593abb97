import os
import re
import subprocess
import sys

import torch

from course_lib.data import load_corpus
from course_lib.evaluation import bits_per_char
from course_lib.pretrained import load_pretrained, model_card
from course_lib.sampling import generate

BLOCK_NETWORK = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from course_lib.pretrained import load_pretrained
model, tok = load_pretrained()
print(tok.decode(tok.encode("ROMEO:\\nBut soft")))
"""


def test_loads_with_no_network():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HTTPS_PROXY="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", BLOCK_NETWORK], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout == "ROMEO:\nBut soft\n"


def test_shipped_model_is_trained_and_its_card_is_honest():
    model, tokenizer = load_pretrained()
    assert model.config.vocab_size == tokenizer.vocab_size == 2048
    assert not model.training
    text = load_corpus("val")[:20_000]  # held-out plays: never seen in training
    bpc = bits_per_char(model, tokenizer, text)
    uniform = torch.log2(torch.tensor(2048.0)).item() * len(tokenizer.encode(text)) / len(text)
    assert bpc < 2.5 < uniform
    card = model_card()
    assert card["parameters"] == model.num_parameters()
    assert abs(card["val_plays_bits_per_char"] - bpc) < 0.3  # a slice, not the whole split


def test_seeded_samples_repeat_and_read_like_a_play():
    model, tokenizer = load_pretrained()
    prompt = tokenizer.encode("HAMLET:\n")
    a = generate(model, prompt, 150, temperature=0.8, top_k=50, seed=0)
    b = generate(model, prompt, 150, temperature=0.8, top_k=50, seed=0)
    assert torch.equal(a, b)
    text = tokenizer.decode(a[0].tolist())
    assert re.search(r"\n\n[A-Z][A-Z ]+:\n", text), text  # a new speaker takes over
    assert text.count("\n") >= 4


def test_each_call_gives_an_independent_model():
    m1, _ = load_pretrained()
    m2, _ = load_pretrained()
    with torch.no_grad():
        m1.transformer.wte.weight.zero_()
    assert m2.transformer.wte.weight.abs().sum() > 0
