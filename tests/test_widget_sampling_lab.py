"""SamplingLab: sliders re-filter cached logits; each control does what course_lib.sampling does."""

import html
import math

import pytest
import torch

from course_lib.interpret import visible_piece
from course_lib.model import GPT, GPTConfig
from course_lib.sampling import (
    SamplingParams,
    describe_filtering,
    generate,
    generate_text,
    next_token_probs,
)
from course_lib.tokenization import CharTokenizer
from widgets.sampling_lab import SamplingLab

CHARS = [chr(32 + i) for i in range(95)] + ["\n", "\t"]  # 97 tokens
# params() with every slider at its default: nothing filtered, nothing penalised
OFF = SamplingParams(temperature=1.0, top_k=None, top_p=None, min_p=None,
                     repetition_penalty=None, presence_penalty=0.0, frequency_penalty=0.0)


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
    assert lab.params() == SamplingParams(top_k=5)


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
    lab.min_p.value = 0.05
    lab.repetition_penalty.value = 1.3
    lab.presence_penalty.value = 0.5
    lab.frequency_penalty.value = 0.2
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
    assert lab.top_p.value == 1.0 and lab.params().top_p is None
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


# ----- penalties and min-p: the bars and Generate compute what course_lib.sampling does -----


def shown_probs(lab) -> torch.Tensor:
    """The sampled-from probabilities of the tokens shown, as a tensor."""
    return torch.tensor(lab.summary["after"])


def test_the_penalties_and_min_p_are_off_by_default_and_settings_round_trip(lab):
    assert lab.params() == OFF
    plain = describe_filtering(lab._logits, n=20)
    assert lab.summary == plain  # off: exactly the unpenalised, unfiltered distribution
    chosen = {"temperature": 0.7, "top_k": 30, "top_p": 0.9, "min_p": 0.05,
              "repetition_penalty": 1.3, "presence_penalty": -0.5, "frequency_penalty": 0.2}
    lab.temperature.value, lab.top_k.value, lab.top_p.value = 0.7, 30, 0.9
    lab.min_p.value, lab.repetition_penalty.value = 0.05, 1.3
    lab.presence_penalty.value, lab.frequency_penalty.value = -0.5, 0.2
    # exact floats: 0.05 is 0.05, not 0.05000000000000001
    assert lab.params() == SamplingParams(**chosen)
    assert lab.summary == describe_filtering(lab._logits, n=20, context=lab.tokenizer.encode(
        "To be"), **chosen)
    # what params() returns is what generate takes, and setting it back restores the view
    generate(lab.model, lab.tokenizer.encode("To be"), 2, seed=0, params=lab.params())
    lab.temperature.value, lab.top_k.value, lab.top_p.value = 1.0, 0, 1.0
    lab.min_p.value, lab.repetition_penalty.value = 0.0, 1.0
    lab.presence_penalty.value, lab.frequency_penalty.value = 0.0, 0.0
    assert lab.params() == OFF and lab.summary == plain
    for slider, off in ((lab.min_p, 0.0), (lab.repetition_penalty, 1.0),
                        (lab.presence_penalty, 0.0), (lab.frequency_penalty, 0.0)):
        assert off in slider.options and all(round(v, 2) == v for v in slider.options)
        assert not slider.continuous_update  # applies on release, like the others


def test_repetition_penalty_shows_transformers_distribution(lab):
    from transformers import RepetitionPenaltyLogitsProcessor

    ids = lab.tokenizer.encode("To be")
    for penalty in (0.5, 1.3, 3.0):
        lab.repetition_penalty.value = penalty
        ref = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([ids]), lab._logits[None])
        want = torch.softmax(ref[0], -1)
        shown = lab.summary["ids"]
        assert torch.allclose(shown_probs(lab), want[shown], atol=1e-7)
        assert shown == torch.sort(ref[0], descending=True, stable=True).indices[:20].tolist()
        assert lab.summary["kept"] == 97  # a penalty moves probability, it removes nothing
    # above 1, the prompt's tokens lose probability and the others gain
    seen = [i for i in lab.summary["ids"] if i in ids]
    unseen = [i for i in lab.summary["ids"] if i not in ids]
    before = dict(zip(lab.summary["ids"], lab.summary["before"], strict=True))
    after = dict(zip(lab.summary["ids"], lab.summary["after"], strict=True))
    assert seen and unseen
    assert all(after[i] < before[i] for i in seen)
    assert all(after[i] > before[i] for i in unseen)


def test_presence_and_frequency_penalties_follow_the_formula(lab):
    from collections import Counter

    lab.prompt.value = "To be, or not to be"  # 'o', 't', ' ', 'b', 'e' occur more than once
    ids = lab.tokenizer.encode(lab.prompt.value)
    lab.presence_penalty.value, lab.frequency_penalty.value = 0.8, 0.5
    counts = Counter(ids)
    want = lab._logits.clone()
    for token, n in counts.items():
        want[token] -= 0.8 + 0.5 * n
    want = torch.softmax(want, -1)
    assert torch.allclose(shown_probs(lab), want[lab.summary["ids"]], atol=1e-6)
    assert torch.allclose(torch.tensor(lab.summary["after"]).sum(), want[lab.summary["ids"]].sum())
    # negative: encourages; every token of the prompt gains the same factor e^2 on the others
    lab.presence_penalty.value, lab.frequency_penalty.value = -2.0, 0.0
    gain = {i: a / b for i, a, b in zip(lab.summary["ids"], lab.summary["after"],
                                         lab.summary["before"], strict=True)}
    seen = [g for i, g in gain.items() if i in counts]
    unseen = [g for i, g in gain.items() if i not in counts]
    assert seen and unseen
    assert min(seen) / max(unseen) == pytest.approx(math.exp(2.0), rel=1e-4)
    assert max(seen) / min(unseen) == pytest.approx(math.exp(2.0), rel=1e-4)


def test_min_p_shows_transformers_cut(lab):
    from transformers import MinPLogitsWarper

    kept = []
    for p in (0.0, 0.02, 0.1, 0.5, 1.0):
        lab.min_p.value = p
        ref = MinPLogitsWarper(p)(None, lab._logits[None].clone())[0]
        assert lab.summary["kept"] == int(torch.isfinite(ref).sum())
        assert torch.allclose(shown_probs(lab), torch.softmax(ref, -1)[lab.summary["ids"]])
        kept.append(lab.summary["kept"])
    assert kept == sorted(kept, reverse=True) and kept[0] == 97 and kept[-1] == 1
    assert lab.params().min_p == 1.0
    lab.min_p.value = 0.0
    assert lab.params().min_p is None and lab.summary["kept"] == 97


def test_every_value_of_every_new_slider_shows_without_a_message(lab):
    lab.temperature.value = 0.0  # greedy with penalties too: the penalised argmax
    for slider in (lab.min_p, lab.repetition_penalty, lab.presence_penalty,
                   lab.frequency_penalty):
        for value in slider.options:
            slider.value = value
            assert lab.message.value == "" and lab.summary["kept"] >= 1
        slider.value = slider.options[-1]
    assert lab.summary["kept"] == 1 and lab.summary["after"][0] == 1.0
    # a value that is not on the slider is refused at once, and nothing changes
    shown = lab.summary
    for slider, bad in ((lab.min_p, 0.123), (lab.repetition_penalty, 0.0),
                        (lab.presence_penalty, float("nan")), (lab.frequency_penalty, "1")):
        with pytest.raises(Exception, match="[Ii]nvalid"):
            slider.value = bad
    assert lab.summary is shown and lab.message.value == ""
    assert len(lab.generate()) == 12  # the extreme settings still generate


def test_a_failing_filter_shows_a_message_not_a_traceback(lab, monkeypatch):
    import widgets.sampling_lab as module

    def broken(*args, **kwargs):
        raise ValueError("min_p must be at most 1")

    monkeypatch.setattr(module, "describe_filtering", broken)
    lab.min_p.value = 0.5  # the callback fails inside: shown, not raised
    assert "min_p must be at most 1" in lab.message.value


@pytest.fixture(scope="module")
def shipped():
    from course_lib.pretrained import load_pretrained

    return load_pretrained()


def test_generate_with_penalties_on_the_shipped_model_equals_generate_text(shipped):
    model, tok = shipped
    prompt = "ROMEO:\nO, she doth teach the"
    lab = SamplingLab(model, tok, prompt=prompt, max_new_tokens=40)
    lab.repetition_penalty.value = 1.5
    lab.temperature.value, lab.top_p.value = 0.8, 0.95
    lab.seed.value = "3"
    text = lab.generate()
    assert text == generate_text(model, tok, prompt, 40, temperature=0.8, top_p=0.95, seed=3,
                                 repetition_penalty=1.5)
    assert text != generate_text(model, tok, prompt, 40, temperature=0.8, top_p=0.95, seed=3)
    lab.repetition_penalty.value = 1.0
    lab.presence_penalty.value, lab.frequency_penalty.value, lab.min_p.value = 0.6, 0.3, 0.05
    assert lab.generate() == generate_text(model, tok, prompt, 40, temperature=0.8, top_p=0.95,
                                           seed=3, presence_penalty=0.6, frequency_penalty=0.3,
                                           min_p=0.05)
    # greedy with a repetition penalty: the first token is the top bar, as shown
    lab.temperature.value = 0.0
    lab.presence_penalty.value = lab.frequency_penalty.value = 0.0
    lab.repetition_penalty.value = 2.0
    first = generate(model, tok.encode(prompt), 1, temperature=0,
                     repetition_penalty=2.0)[0, -1].item()
    assert lab.summary["ids"][0] == first and lab.summary["after"][0] == 1.0
    assert lab.generate() == generate_text(model, tok, prompt, 40, temperature=0, seed=3,
                                           repetition_penalty=2.0)


def test_the_legend_sits_above_the_plot_and_the_labels_have_room(lab):
    legend = lab.figure.layout.legend
    # horizontal, in the margin above the plot area: it can cover neither a bar nor a label
    assert legend.orientation == "h" and legend.y >= 1 and legend.yanchor == "bottom"
    assert lab.figure.layout.xaxis.automargin  # long tick labels push the margin, not the title


# ----- SmolLM2: a real, sharp distribution ------------------------------------------------

LIST_PROMPT = "Shopping list:\n1. eggs\n2. milk\n3. eggs\n4. milk\n5."


@pytest.fixture(scope="module")
def smol_lab(smollm2):
    model, tok = smollm2
    lab = SamplingLab(model, tok, prompt=LIST_PROMPT, n_shown=20, max_new_tokens=8)
    lab.forward_calls = []
    hook = model.register_forward_hook(lambda *args: lab.forward_calls.append(1))
    yield lab
    hook.remove()


def test_smollm2_lab_a_penalty_changes_the_shown_distribution(smol_lab):
    lab, tok = smol_lab, smol_lab.tokenizer
    ids = tok.encode(LIST_PROMPT)
    top = lab.summary["ids"][0]
    assert top in ids  # the list invites a repeat: the likeliest next token is in the prompt
    assert lab.labels[0] == visible_piece(tok.token_bytes(top))  # Ġ-spaces shown as '·'
    assert all("Ġ" not in label and "\ufffd" not in label for label in lab.labels)
    lab.repetition_penalty.value = 1.2
    new_top, shown = lab.summary["ids"][0], lab.summary["ids"]
    assert new_top != top and new_top not in ids and top in shown  # the repeat moved down
    assert lab.summary["after"][shown.index(top)] < lab.summary["before"][shown.index(top)]
    assert html.escape(lab.labels[0]) in lab.stats.value
    lab.repetition_penalty.value = 3.0
    assert top not in lab.summary["ids"]  # pushed out of the 20 likeliest altogether
    lab.repetition_penalty.value = 1.0
    lab.min_p.value = 0.1
    assert lab.summary["kept"] < 20  # a sharp distribution: min-p leaves a handful
    lab.min_p.value = 0.0
    assert lab.forward_calls == []  # sliders re-filter the cached logits
    lab.prompt.value = LIST_PROMPT + " eggs\n6."
    assert len(lab.forward_calls) == 1
