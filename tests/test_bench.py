"""The benchmark compares like with like: same weights, same targets, same tokens."""

import torch

from course_lib import bench, bench_smollm2

CPU = torch.device("cpu")


def test_course_shape_is_the_shipped_model():
    from course_lib.pretrained import load_pretrained

    model, _ = load_pretrained()
    c = model.config
    assert bench.SHAPES["course"] == dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                          n_positions=c.block_size, vocab_size=c.vocab_size)


def test_both_models_score_the_same_targets():
    hf, ours = bench.hf_and_ours("course", CPU)
    x = torch.randint(0, bench.SHAPES["course"]["vocab_size"], (2, 33))
    inputs, targets = x[:, :-1], x[:, 1:].contiguous()
    hf_loss = hf(inputs, labels=targets, shift_labels=targets).loss
    _, loss = ours(inputs, targets)
    assert abs(loss.item() - hf_loss.item()) < 1e-5


def test_training_figures_are_positive():
    r = bench.bench_training("course", 2, 16, 1, CPU, compile=False, cpu_bf16=True)
    assert r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 and r["bf16_tok_s"] > 0


def test_generation_gives_transformers_greedy_tokens():
    r = bench.bench_generation("course", 8, 12, CPU)
    assert r["same_tokens"] is True


def test_cached_and_uncached_generation_agree():
    r = bench.bench_cache("course", 8, 12, CPU)
    assert r["same_tokens"] is True and r["cached_tok_s"] > 0


def test_command_line_writes_its_figures_as_json(tmp_path, capsys):
    import json

    out = tmp_path / "bench.json"
    bench.main(["--quick", "--skip", "training", "generation", "cache", "smollm2", "smollm2-q4",
                "ddp", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and set(report["shapes"]) == {"course", "small"}
    (bpe,) = report["rows"]
    assert bpe["figure"].startswith("BPE train") and "same merges: True" in bpe["note"]
    assert bpe["ratio"] > 1 and bpe["meets"] == (bpe["ratio"] >= bpe["target"])
    assert "BPE train" in capsys.readouterr().out


def test_matvec_limit_times_every_weight_matrix_once():
    import torch

    from course_lib.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16))
    calls = []
    real = torch.nn.functional.linear

    def counting(x, w, *args):
        calls.append(tuple(w.shape))
        return real(x, w, *args)

    torch.nn.functional.linear = counting
    try:
        assert bench_smollm2.matvec_seconds(model, repeats=1) > 0
    finally:
        torch.nn.functional.linear = real
    # 4 matrices per layer and the head, per timed step (one warm-up, one timed run).
    assert len(calls) == 2 * (2 * 4 + 1) and calls.count((50, 16)) == 2


def test_nanogpt_row_is_nanogpts_cpu_shape_and_compares_like_with_like():
    # nanoGPT's README CPU run: --n_layer=4 --n_head=4 --n_embd=128 --block_size=64, on
    # shakespeare_char's 65 characters.
    assert bench.SHAPES["nanogpt"] == dict(n_layer=4, n_head=4, n_embd=128, n_positions=64,
                                           vocab_size=65)
    hf, ours = bench.hf_and_ours("nanogpt", CPU)
    x = torch.randint(0, 65, (12, 65))
    inputs, targets = x[:, :-1], x[:, 1:].contiguous()
    hf_loss = hf(inputs, labels=targets, shift_labels=targets).loss
    assert abs(ours(inputs, targets)[1].item() - hf_loss.item()) < 1e-5


def test_ddp_figures_come_from_the_trainer_with_the_same_losses():
    r = bench.bench_ddp(2, 3, CPU)
    assert r["processes"] == 2 and r["same_final_loss"] is True
    assert r["ddp_tok_s_per_process"] == r["ddp_tok_s"] / 2 and r["one_tok_s"] > 0


def test_decode_floor_script_times_a_bare_loop_that_computes_the_models_logits():
    import importlib.util
    from pathlib import Path

    from course_lib.model import GPT, GPTConfig

    path = Path(__file__).resolve().parent.parent / "scripts" / "measure_decode_floor.py"
    spec = importlib.util.spec_from_file_location("measure_decode_floor", path)
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    torch.manual_seed(0)
    # SmolLM2's shape in small: RMSNorm, rotary, SwiGLU, 6 query heads sharing 2 key/value heads
    model = GPT(GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=6, n_kv_head=2,
                          n_embd=48, bias=False, position="rope", norm="rmsnorm",
                          mlp="swiglu", tie_embeddings=True)).eval()
    assert floor.check_bare_step(model, list(range(5, 25))) < 1e-5
    best = floor.measure(model, rounds=1, steps=3, prompt_len=5)
    assert set(best) == {"limit", "bare", "GPT"} and all(v > 0 for v in best.values())
    # a 4-bit layer's bare product is its forward pass, minus the module
    from course_lib.int4_linear import Int4Linear, pack_int4, scales_and_zeros

    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 16, (64, 96), generator=g)
    scale, zero = torch.rand(64, 3, generator=g), torch.randn(64, 3, generator=g)
    layer = Int4Linear([(pack_int4(codes), scales_and_zeros(scale, zero))], 96, 64)
    x = torch.randn(1, 96, generator=g)
    assert torch.equal(floor.product(layer)(x), layer(x))
    # --products: every linear shape of the model, both ways timed
    speeds = floor.products(model, rounds=1, min_bytes=1e5)
    shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert set(speeds) == shapes
    assert all(set(v) == {"F.linear", "W @ X^T"} and min(v.values()) > 0
               for v in speeds.values())
    # --batches: the model with FewRowsLinear layers against plain ones, left as it was
    from course_lib.few_rows_linear import FewRowsLinear, use_few_rows_linears

    use_few_rows_linears(model)
    steps = floor.batches(model, sizes=(1, 2), rounds=1, steps=2)
    assert set(steps) == {1, 2} and all(min(v.values()) > 0 for v in steps.values())
    assert type(model.lm_head) is FewRowsLinear
