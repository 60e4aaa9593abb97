"""SamplingLab: sliders re-filter cached logits; top-k, top-p, temperature do what they claim."""

import html

import pytest
import torch

from course_lib.interpret import visible_piece
from course_lib.model import GPT, GPTConfig
from course_lib.sampling import generate_text, next_token_probs
from course_lib.tokenization import CharTokenizer
from widgets.sampling_lab import SamplingLab

CHARS = [chr(32 + i) for i in range(95)] + ["\n", "\t"]  # 97 tokens


@pytest.fixture
def lab():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
    with torch.no_grad():
        # A fresh model's distribution is almost flat; scaling the (tied) embeddings gives it
        # the peaked shape of a trained model's, which these tests need.
        model.transformer.wte.weight.mul_(8)
    lab = SamplingLab(model, CharTokenizer(CHARS), prompt="To be", n_shown=20, max_new_tokens=12)
    lab.forward_calls = []
    model.register_forward_hook(lambda *args: lab.forward_calls.append(1))
    return lab


def kept_bars(lab) -> int:
    return sum(p > 0 for p in lab.figure.data[1].y)


def test_shows_the_models_real_distribution(lab):
    probs = next_token_probs(lab.model, lab.tokenizer.encode("To be"))[0]
    top = torch.topk(probs, 20)
    assert lab.summary["ids"] == top.indices.tolist()
    assert list(lab.figure.data[0].y) == pytest.approx(top.values.tolist(), abs=1e-6)
    # No filters: what is sampled from is the model's distribution, all 97 tokens possible.
    assert list(lab.figure.data[1].y) == pytest.approx(list(lab.figure.data[0].y))
    assert lab.summary["kept"] == 97 and "97</b> of 97" in lab.stats.value
    assert list(lab.figure.layout.xaxis.ticktext) == lab.labels
    assert lab.labels == [visible_piece(lab.tokenizer.decode([i])) for i in lab.summary["ids"]]
    cumulative = list(lab.figure.data[2].y)
    assert cumulative == sorted(cumulative) and cumulative[0] == pytest.approx(top.values[0])


def test_temperature_near_zero_puts_almost_all_probability_on_one_token(lab):
    lab.temperature.value = 0.05
    assert lab.figure.data[1].y[0] > 0.99
    assert sum(lab.figure.data[1].y[1:]) < 0.01
    assert lab.summary["entropy_after"] < 0.1 < lab.summary["entropy_before"]
    lab.temperature.value = 0.0  # exactly greedy
    assert lab.summary["kept"] == 1 and lab.figure.data[1].y[0] == 1.0


def test_high_temperature_flattens_the_distribution(lab):
    lab.temperature.value = 2.5
    assert lab.figure.data[1].y[0] < lab.figure.data[0].y[0]
    assert lab.summary["entropy_after"] > lab.summary["entropy_before"]


def test_top_k_5_leaves_five_tokens(lab):
    lab.top_k.value = 5
    assert lab.summary["kept"] == 5 and kept_bars(lab) == 5
    assert sum(lab.figure.data[1].y) == pytest.approx(1.0)
    assert "<b>5</b> of 97" in lab.stats.value
    assert lab.settings() == {"temperature": 1.0, "top_k": 5, "top_p": None}


def test_top_p_shrinks_the_kept_set(lab):
    kept = [lab.summary["kept"]]
    for p in (0.9, 0.5, 0.2):
        lab.top_p.value = p
        kept.append(lab.summary["kept"])
        assert lab.figure.layout.shapes[0].y0 == p  # the dotted line marks p
        # Kept: the top tokens up to the first whose cumulative probability reaches p.
        reaching = [i for i, c in enumerate(lab.summary["cumulative"]) if c >= p]
        if reaching:  # else the set is larger than the 20 tokens shown
            assert lab.summary["kept"] == reaching[0] + 1
        else:
            assert lab.summary["kept"] > 20
    assert kept == sorted(kept, reverse=True) and kept[-1] < 20 < kept[0]
    lab.top_p.value = 1.0
    assert lab.summary["kept"] == 97 and lab.figure.layout.shapes == ()


def test_sliders_cost_no_forward_pass_and_a_new_prompt_costs_one(lab):
    lab.temperature.value = 0.7
    lab.top_k.value = 10
    lab.top_p.value = 0.8
    assert lab.forward_calls == []
    before = lab.summary["ids"]
    lab.prompt.value = "Whether 'tis nobler"
    assert len(lab.forward_calls) == 1 and lab.summary["ids"] != before


def test_generate_streams_the_same_text_as_generate_text(lab):
    lab.temperature.value = 0.8
    lab.top_k.value = 20
    text = lab.generate()
    assert text == lab.generated and len(text) == 12
    assert text == generate_text(lab.model, lab.tokenizer, "To be", 12, temperature=0.8,
                                 top_k=20, seed=0)
    assert html.escape(text) in lab.output.value and "To be" in lab.output.value
    assert lab.generate() == text  # same seed, same text
    lab.seed.value = "1"
    assert lab.generate() != text
    assert not lab.generate_button.disabled


def test_the_button_generates(lab):
    lab.generate_button.click()
    assert len(lab.generated) == 12


def test_bad_input_gets_a_message_not_a_traceback(lab):
    lab.seed.value = "abc"
    assert lab.generate() is None and "seed" in lab.message.value
    lab.seed.value = ""
    assert len(lab.generate()) == 12 and lab.message.value == ""  # blank seed: random
    shown = lab.summary
    lab.prompt.value = ""
    assert "prompt box is empty" in lab.message.value and lab.summary is shown
    assert lab.generate() is None
    lab.prompt.value = "x" * 40  # longer than block_size 32
    assert "last 32" in lab.message.value and lab.summary is not shown
    assert len(lab.generate()) == 12


@pytest.mark.parametrize("seed", ["1.5", "-1", str(2**64), "1e3", "seven", "\x00"])
def test_a_seed_box_holding_anything_gets_a_message(lab, seed):
    lab.seed.value = seed
    assert lab.generate() is None and "seed" in lab.message.value
    assert not lab.generate_button.disabled


def test_top_p_holds_exactly_what_the_code_set(lab):
    # A float slider's browser side snaps 0.9 to 0.9000000000000001 and sends it back; the
    # options are exact floats instead, so what the lesson sets is what the learner sees.
    for p in (1.0, 0.9, 0.5, 1.0):
        lab.top_p.value = p
    assert lab.top_p.value == 1.0 and lab.settings()["top_p"] is None
    assert 0.9 in lab.top_p.options and all(round(v, 2) == v for v in lab.top_p.options)


def test_the_bars_axis_fits_what_is_shown(lab):
    lab.prompt.value = "x"
    top = max(max(lab.summary["before"]), max(lab.summary["after"]))
    assert lab.figure.layout.yaxis.range[1] == pytest.approx(min(1.02, 1.1 * top))
    assert lab.figure.data[2].yaxis == "y2"  # the cumulative line keeps its 0 to 1 axis


def test_entropy_is_never_shown_negative(lab):
    lab.temperature.value = 0.0
    assert "-0.00" not in lab.stats.value and "<b>0.00</b> bits after" in lab.stats.value


@pytest.mark.parametrize("bad", [dict(n_shown=0), dict(n_shown=2.5), dict(max_new_tokens=0),
                                 dict(max_new_tokens=10**9), dict(prompt=None)])
def test_nonsense_constructor_arguments_are_refused(lab, bad):
    with pytest.raises((ValueError, TypeError)):
        SamplingLab(lab.model, lab.tokenizer, **bad)


def test_smollm2_with_its_49152_token_vocabulary(smollm2):
    model, tok = smollm2
    lab = SamplingLab(model, tok, prompt="The capital of France is", n_shown=20)
    probs = next_token_probs(model, tok.encode("The capital of France is"))[0]
    assert probs.shape == (49152,)
    top = torch.topk(probs, 20)
    assert lab.summary["ids"] == top.indices.tolist()
    assert len(lab.figure.data[0].y) == 20  # bars for the top tokens only, not 49,152
    lab.temperature.value = 0.0
    assert lab.summary["kept"] == 1 and lab.figure.data[1].y[0] == 1.0
    lab.temperature.value, lab.top_k.value = 1.0, 5
    assert lab.summary["kept"] == 5
