import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.few_rows_linear import (
    MAX_ROWS,
    FewRowsLinear,
    few_rows_product,
    takes_few_rows_path,
    use_few_rows_linears,
)
from course_lib.model import GPT, GPTConfig

MKL = torch.backends.mkl.is_available()


@pytest.mark.parametrize("rows", range(1, MAX_ROWS + 1))
def test_few_rows_product_equals_f_linear(rows):
    g = torch.Generator().manual_seed(rows)
    w, x = torch.randn(300, 96, generator=g), torch.randn(rows, 96, generator=g)
    y = few_rows_product(x, w)
    assert y.shape == (rows, 300) and y.is_contiguous()  # the layout F.linear gives
    assert torch.allclose(y, F.linear(x, w), atol=1e-5)


def test_the_path_is_for_a_few_float32_rows_on_the_cpu_without_gradients():
    w = torch.randn(64, 32)
    assert takes_few_rows_path(torch.randn(1, 1, 32), w) is MKL
    assert takes_few_rows_path(torch.randn(2, MAX_ROWS // 2, 32), w) is MKL
    assert not takes_few_rows_path(torch.randn(MAX_ROWS + 1, 32), w)  # a prompt: F.linear
    assert not takes_few_rows_path(torch.randn(1, 32).bfloat16(), w.bfloat16())
    assert not takes_few_rows_path(torch.randn(0, 32), w)
    assert not takes_few_rows_path(torch.randn(1, 32), w.requires_grad_())  # training
    with torch.no_grad():
        assert takes_few_rows_path(torch.randn(1, 32), w) is MKL


def test_few_rows_linear_is_nn_linear_on_the_same_parameters():
    torch.manual_seed(0)
    plain = nn.Linear(48, 80).eval()
    fast = FewRowsLinear.taking_over(plain)
    assert not fast.training
    assert isinstance(fast, nn.Linear) and fast.weight is plain.weight
    assert fast.bias is plain.bias and fast.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        for shape in ((1, 1, 48), (3, 48), (2, 2, 48), (2, 9, 48)):
            x = torch.randn(*shape)
            assert torch.allclose(fast(x), plain(x), atol=1e-5), shape
    # With gradients, F.linear itself: the same values and gradients, bit for bit.
    x = torch.randn(1, 48, requires_grad=True)
    fast(x).sum().backward()
    grads = x.grad.clone(), plain.weight.grad.clone()
    x.grad, plain.weight.grad = None, None
    plain(x).sum().backward()
    assert torch.equal(grads[0], x.grad) and torch.equal(grads[1], plain.weight.grad)


def test_a_gpt_with_few_rows_linears_decodes_as_before():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_kv_head=2,
                       n_embd=64, bias=False, position="rope", norm="rmsnorm", mlp="swiglu",
                       tie_embeddings=True)
    plain = GPT(config).eval()
    fast = use_few_rows_linears(GPT(config).eval())
    fast.load_state_dict(plain.state_dict())
    assert fast.lm_head.weight is fast.transformer.wte.weight  # the tie survives the swap
    assert sum(type(m) is FewRowsLinear for m in fast.modules()) == 2 * 4 + 1
    from course_lib.sampling import generate

    prompt = [5, 17, 3, 40]
    assert generate(fast, prompt, 12, temperature=0).tolist() == \
        generate(plain, prompt, 12, temperature=0).tolist()


def test_bare_product_is_the_layers_own_route():
    from course_lib.few_rows_linear import bare_product

    torch.manual_seed(0)
    plain = nn.Linear(32, 48, bias=False)
    fast = FewRowsLinear.taking_over(plain)
    x = torch.randn(1, 32)
    with torch.no_grad():
        assert torch.equal(bare_product(plain)(x), F.linear(x, plain.weight))
        assert torch.equal(bare_product(fast)(x), few_rows_product(x, fast.weight))
        assert torch.equal(bare_product(fast)(x), fast(x))
