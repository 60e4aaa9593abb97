"""Checks for lesson 6's exercises: LayerNorm from scratch, a block's parameters, the logit lens,
the whole GPT forward pass from the learner's own pieces."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from course_lib.interpret import logit_lens
from course_lib.model import GPT, Block, GPTConfig, eval_mode
from widgets.checks import shipped
from widgets.feedback import (
    Feedback,
    a_function,
    as_int,
    call_learner,
    exercise,
    right,
    shown,
    wrong,
)

LENS_TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\n"
             "It is the east, and Juliet is the")
LENS_TOKEN = " sun"


def _trials() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """Random inputs for a layer_norm: odd shapes, far-from-zero means, gains and shifts."""
    g = torch.Generator().manual_seed(6)
    trials = []
    for shape, eps in (((2, 5, 8), 1e-5), ((3, 16), 1e-6), ((7,), 0.1), ((4, 3, 2, 32), 1e-5)):
        C = shape[-1]
        x = torch.randn(shape, generator=g) * 3 + 5
        weight = torch.rand(C, generator=g) + 0.5
        bias = torch.randn(C, generator=g)
        trials.append((x, weight, bias, eps))
    # A row with almost no spread: where eps, and where it goes, matters.
    x = 2 + 1e-3 * torch.randn(2, 6, generator=g)
    trials.append((x, torch.ones(6), torch.zeros(6), 1e-2))
    return trials


def _diagnose(fn, x, weight, bias, eps) -> str:
    """Why a learner's layer_norm differs: compare it with the usual slips."""
    mean = x.mean(-1, keepdim=True)
    slips = {
        "It looks like you divided by the unbiased standard deviation (n - 1). LayerNorm uses "
        "the plain variance over the last axis: x.var(-1, unbiased=False), or "
        "((x - mean) ** 2).mean(-1).":
            (x - mean) / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + eps) * weight + bias,
        "eps belongs inside the square root: (x - mean) / sqrt(var + eps), as torch does.":
            (x - mean) / (x.var(-1, keepdim=True, unbiased=False).sqrt() + eps) * weight + bias,
        "The normalised x must still be scaled by weight and shifted by bias, one per feature.":
            F.layer_norm(x, x.shape[-1:], None, None, eps),
    }
    result, _ = call_learner(fn, x.clone(), weight.clone(), bias.clone(), eps)
    for why, slip in slips.items():
        if isinstance(result, torch.Tensor) and result.shape == slip.shape and torch.allclose(
                result.float(), slip, atol=1e-4, rtol=1e-4):
            return why
    return ("Normalise each token's vector over its last axis: subtract its mean, divide by "
            "sqrt(variance + eps), then multiply by weight and add bias.")


@exercise()
def check_layer_norm(layer_norm) -> Feedback:
    """A learner's layer_norm(x, weight, bias, eps), run on random inputs against torch's."""
    for x, weight, bias, eps in _trials():
        before = x.clone()
        result, failed = call_learner(
            layer_norm, x, weight, bias, eps,
            if_none="Your layer_norm returns None: write its body so that it returns the "
                    "normalised tensor, then run the cell again.")
        if failed is not None:
            return failed
        if not isinstance(result, torch.Tensor) or not result.is_floating_point():
            return wrong(f"layer_norm should return a tensor (of floats), got {shown(result)}.")
        if not torch.equal(x, before):
            return wrong("Your function changed its input x in place; compute a new tensor.")
        expected = F.layer_norm(x, x.shape[-1:], weight, bias, eps)
        if result.shape != expected.shape:
            return wrong(f"For x of shape {tuple(x.shape)} the result has shape "
                         f"{tuple(result.shape)}; LayerNorm keeps the shape. Did you forget "
                         "keepdim=True on the mean or the variance?")
        if not torch.allclose(result.float(), expected, atol=1e-4, rtol=1e-4):
            return wrong(f"On x of shape {tuple(x.shape)} (eps={eps}) your result differs from "
                         f"torch's by up to {(result.float() - expected).abs().max():.3g}. "
                         + _diagnose(layer_norm, x, weight, bias, eps))
    ln = torch.nn.LayerNorm(32, eps=1e-5)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_()
    x = torch.randn(2, 4, 32)
    with torch.no_grad():
        result, failed = call_learner(layer_norm, x, ln.weight, ln.bias, ln.eps)
    if failed is not None:
        return failed
    if not (isinstance(result, torch.Tensor) and torch.allclose(result.float(), ln(x),
                                                                 atol=1e-4)):
        return wrong("Your function agrees with F.layer_norm but not with nn.LayerNorm's own "
                     "weight and bias: does it read them as given?")
    return right("Your layer_norm equals torch's on every input tried, among them a row with "
                 "almost no spread, where eps inside the square root keeps the division tame.")


def block_parameters(n_embd: int, n_head: int = 12) -> int:
    """Parameters of one GPT-2 block of width n_embd, counted on a real course_lib Block."""
    block = Block(GPTConfig(n_embd=n_embd, n_head=n_head, block_size=8, vocab_size=8))
    return sum(p.numel() for p in block.parameters())


@exercise(read=as_int, expect="a whole number, like 1234")
def check_block_parameters(answer: int, n_embd: int = 768) -> Feedback:
    """Parameters of one GPT-2 block (two LayerNorms, attention, a 4x MLP, all with biases)."""
    C = n_embd
    expected = block_parameters(C)
    attention, mlp, norms = 4 * C * C + 4 * C, 8 * C * C + 5 * C, 4 * C
    if answer == expected:
        return right(f"{expected:,} = attention {attention:,} + MLP {mlp:,} + two LayerNorms "
                     f"{norms:,}: 12 x {C}² weights and 13 x {C} biases and gains. The MLP "
                     "holds two thirds of the block.")
    if answer == attention + mlp:
        return wrong(f"Close: you left out the two LayerNorms, each with a gain and a shift of "
                     f"{C} numbers ({norms:,} in all).")
    if answer == 12 * C * C:
        return wrong("That is the weight matrices only. Every linear layer has a bias, and each "
                     "LayerNorm a gain and a shift.")
    if answer == attention or answer == attention + norms:
        return wrong(f"That is the attention part. The MLP is bigger: {C} -> {4 * C} -> {C}, "
                     "two matrices with their biases.")
    if answer == 4 * C * C + 4 * C + 2 * C * C + 2 * C + norms:
        return wrong(f"The MLP widens to 4 x {C} = {4 * C}, not {C}: each of its two matrices "
                     f"is {C} x {4 * C}.")
    return wrong(f"Not {answer:,}. Add up the attention (four {C} x {C} matrices with biases), "
                 f"the MLP ({C} x {4 * C} and {4 * C} x {C}, with biases) and two LayerNorms.")


@exercise(read=as_int, expect="a block number, a whole number like 0")
def check_lens_block(
    answer: int, model=None, tokenizer=None, text: str = LENS_TEXT, token: str = LENS_TOKEN
) -> Feedback:
    """After which block (numbered from 0) does the logit lens first rank `token` top?"""
    model, tokenizer = shipped(model, tokenizer)
    n_layer = model.config.n_layer
    if not 0 <= answer < n_layer:
        return wrong(f"The blocks are numbered 0 to {n_layer - 1}, as on the explorer's block "
                     f"slider; got {answer}.")
    (token_id,) = tokenizer.encode(token)
    lens = logit_lens(model, tokenizer.encode(text))
    top = lens.argmax(-1)
    firsts = [b for b in range(n_layer) if int(top[b + 1]) == token_id]
    if not firsts:
        raise ValueError(f"the lens never ranks {token!r} top on this text")
    first = firsts[0]
    p = lens[answer + 1, token_id].item()
    if answer == first:
        before = f"block {first - 1}" if first else "the embeddings"
        return right(f"After block {first}, {token!r} is the most likely next token for the "
                     f"first time ({p:.1%}); after {before} it was not. The lens shows the "
                     "prediction forming as the blocks write into the stream.")
    if answer == first + 1:
        return wrong(f"Blocks are numbered from 0: block {answer} is the {answer + 1}th. Row "
                     f"{answer + 1} of logit_lens (row 0 is the embeddings) is the stream after "
                     f"block {answer}.")
    if int(top[answer + 1]) != token_id:
        rank = int((lens[answer + 1] > lens[answer + 1, token_id]).sum()) + 1
        return wrong(f"After block {answer} the lens ranks {token!r} number {rank} "
                     f"({p:.1%}), not first.")
    return wrong(f"After block {answer} {token!r} is indeed top, but it is top earlier "
                 "already: find the first block.")


# ----- Exercise 4 (code): the whole GPT, from the learner's own pieces ------------------------

# Two lines of a play, the same length in tokens, run as one batch of 2.
GPT_TEXTS = ("ROMEO:\nBut soft, what light through yonder window breaks?\n",
             "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n")
GPT_TOLERANCE = 1e-4  # on the logits, as the lesson states


def weights_of(model: GPT) -> dict[str, torch.Tensor]:
    """A model's weights by name, as gpt_forward reads them: copies, so the model stays as it is.

    named_parameters lists a tied weight once, under its first name: the head reads
    transformer.wte.weight, there is no lm_head.weight.
    """
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def batch_of(tokenizer, texts: tuple[str, ...] = GPT_TEXTS) -> torch.Tensor:
    """The texts as one batch of token ids, each cut to the shortest one's length."""
    rows = [tokenizer.encode(t) for t in texts]
    T = min(len(r) for r in rows)
    return torch.tensor([r[:T] for r in rows])


def gpt_stages(model: GPT, idx: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Every stage of model's forward pass on idx, in order: (what it is, its value).

    Only for the GPT-2 design the lesson builds (learned positions, LayerNorm, GELU, tied head).
    """
    t = model.transformer
    with eval_mode(model):
        T = idx.shape[1]
        tok = t.wte(idx)
        x = tok + t.wpe(torch.arange(T))
        stages = [("token embeddings", tok), ("positions", x)]
        for i, b in enumerate(t.h):
            n1 = b.ln_1(x)
            a = b.attn(n1)[0]
            mid = x + a
            n2 = b.ln_2(mid)
            m = b.mlp(n2)
            x = mid + m
            stages += [(f"block {i} ln_1", n1), (f"block {i} attention", a),
                       (f"block {i} attention sum", mid), (f"block {i} ln_2", n2),
                       (f"block {i} mlp", m), (f"block {i} mlp sum", x)]
        nf = t.ln_f(x)
        stages += [("final norm", nf), ("head", model.lm_head(nf))]
    return stages


class _Recorder(TorchFunctionMode):
    """Keeps a copy of every float tensor the learner's code computes whose size is one of
    `sizes`, so that the check can look for each stage of the forward pass among them."""

    def __init__(self, sizes: set[int], limit: int = 4000):
        super().__init__()
        self.sizes, self.limit, self.seen = sizes, limit, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (isinstance(out, torch.Tensor) and out.is_floating_point()
                and out.numel() in self.sizes and len(self.seen) < self.limit):
            self.seen.append(out.detach().clone())
        return out


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.numel() == b.numel() and bool(
        (a.reshape(b.shape).float() - b).abs().max() <= GPT_TOLERANCE)


def _found(value: torch.Tensor, seen: list[torch.Tensor]) -> bool:
    return any(_close(s, value) for s in seen)


def _where_it_differs(stages: dict[str, torch.Tensor], seen: list[torch.Tensor], model: GPT,
                      idx: torch.Tensor) -> str:
    """The first stage of the forward pass that the learner's computation never produced, and
    what usually goes wrong there."""
    t, T = model.transformer, idx.shape[1]
    if not _found(stages["token embeddings"], seen):
        return ("the token embeddings: row idx[b, t] of w['transformer.wte.weight'] for every "
                "token, w['transformer.wte.weight'][idx], shape (B, T, C).")
    if not _found(stages["positions"], seen):
        tok, wpe = stages["token embeddings"], t.wpe.weight.detach()
        if T < wpe.shape[0] and _found(tok + wpe[1 : T + 1], seen):
            return ("the positions: you added rows 1 to T of w['transformer.wpe.weight']. "
                    "Positions count from 0: the token at position t gets row t, wpe[:T].")
        return ("the positions: add row t of w['transformer.wpe.weight'] to the token at "
                "position t (counting from 0), w['transformer.wpe.weight'][:T], the same for "
                "every row of the batch.")
    for i in range(model.config.n_layer):
        for sub, first, part, name, rest in (
            ("attention sum", "ln_1", "attention", "attention", "x + attention(ln_1(x))"),
            ("mlp sum", "ln_2", "mlp", "MLP", "x + mlp(ln_2(x))"),
        ):
            if _found(stages[f"block {i} {sub}"], seen):
                continue
            norm = f"transformer.h.{i}.{first}"
            if not _found(stages[f"block {i} {first}"], seen):
                return (f"block {i}'s norm {first}: LayerNorm of the stream with "
                        f"w['{norm}.weight'] and w['{norm}.bias'], eps = config.norm_eps.")
            if _found(stages[f"block {i} {part}"], seen):
                return (f"block {i}: its {name} is right, but the stream after it is not. The "
                        f"block adds to the stream, {rest}: keep the residual, do not replace "
                        "x by the sublayer's output.")
            if part == "attention":
                return (f"block {i}'s attention (or the sum after it): c_attn with its bias, "
                        "split q, k, v into config.n_head heads, causal attention in each, the "
                        "heads joined back to (B, T, C), then c_proj with its bias; then "
                        "x = x + that.")
            return (f"block {i}'s MLP (or the sum after it): c_fc with its bias, GPT-2's GELU "
                    "in its tanh form (section 4; F.gelu(h, approximate='tanh')), c_proj with "
                    "its bias; then x = x + that.")
    if not _found(stages["final norm"], seen):
        last = stages[f"block {model.config.n_layer - 1} mlp sum"]
        hint = (" Your logits look like the stream after the last block times wte.T: you "
                "left out the final norm." if _found(last @ t.wte.weight.detach().T, seen)
                else "")
        return ("the final norm: after the last block, LayerNorm with "
                "w['transformer.ln_f.weight'] and w['transformer.ln_f.bias'], before the "
                "head." + hint)
    return ("the head: logits = the final norm's output @ w['transformer.wte.weight'].T (the "
            "head is tied to the token embedding), shape (B, T, vocab_size).")


def gpt_mismatch(fn, model: GPT, idx: torch.Tensor) -> Feedback | None:
    """None if fn(weights, idx, config) gives model's logits on idx to GPT_TOLERANCE, else a
    Feedback naming the first stage of the forward pass that differs."""
    stages = dict(gpt_stages(model, idx))
    logits = stages["head"]
    sizes = {stages["positions"].numel(), logits.numel()}
    on = (f"on the weights of a {model.config.n_layer}-block model and a batch of shape "
          f"{tuple(idx.shape)}")
    with _Recorder(sizes) as recorder:
        out, failed = call_learner(
            fn, weights_of(model), idx.clone(), model.config, on=on,
            if_none="Your gpt_forward returns None: return the logits, a tensor of shape "
                    "(B, T, vocab_size).")
    if failed is not None:
        return failed
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return wrong(f"Return the logits, a float tensor of shape (B, T, vocab_size); got "
                     f"{shown(out)}.")
    if tuple(out.shape) != tuple(logits.shape):
        return wrong(f"The logits should have shape (B, T, vocab_size) = {tuple(logits.shape)} "
                     f"for idx of shape {tuple(idx.shape)}; yours have {tuple(out.shape)}.")
    if _close(out.detach(), logits):
        return None
    gap = (out.detach().float() - logits).abs().max().item()
    if _found(logits, recorder.seen):
        return wrong(f"Your code computes the right logits, but returns something else (up "
                     f"to {gap:.3g} away): return the logits themselves, not probabilities or "
                     "a rescaled copy.")
    where = _where_it_differs(stages, recorder.seen, model, idx)
    return wrong(f"Your logits differ from course_lib's GPT by up to {gap:.3g}. The first stage "
                 f"that differs is {where}")


@exercise(**a_function("gpt_forward(w, idx, config)"))
def check_gpt_forward(fn: object, model=None, tokenizer=None) -> Feedback:
    """Exercise 4: fn(w, idx, config) -> logits, the whole GPT from the learner's own pieces.

    Exercise text to paste:

    Write `gpt_forward(w, idx, config)`: the whole forward pass of a GPT-2-style model from
    your own pieces. w holds the weights by name (w = dict(model.named_parameters())), idx is
    a (B, T) batch of token ids and config the model's GPTConfig. Token embeddings plus
    positions; every block, x + attention(ln_1(x)), then x + mlp(ln_2(x)); the final norm; the
    head. Return the logits, shape (B, T, vocab_size). The check loads the shipped model's
    weights into it, compares its logits with course_lib's GPT (to 1e-4) and, if they differ,
    names the first stage that does.

        def gpt_forward(w, idx, config):
            ...  # return the logits

        check_gpt_forward(gpt_forward)

    Solution:

        def layer_norm(x, weight, bias, eps):  # exercise 1
            mean = x.mean(-1, keepdim=True)
            var = ((x - mean) ** 2).mean(-1, keepdim=True)
            return (x - mean) / torch.sqrt(var + eps) * weight + bias

        def split_heads(x, n_head):  # lesson 5, exercise 4
            B, T, C = x.shape
            return x.view(B, T, n_head, C // n_head).transpose(1, 2)

        def causal_attention(q, k, v):  # lesson 4, exercise 4
            T, d = q.shape[-2], q.shape[-1]
            scores = q @ k.transpose(-2, -1) / math.sqrt(d)
            allowed = torch.ones(T, T, dtype=torch.bool).tril()
            return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v

        def gelu(x):  # section 4, the tanh form
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

        def gpt_forward(w, idx, config):
            B, T = idx.shape
            C, eps = config.n_embd, config.norm_eps
            x = w["transformer.wte.weight"][idx] + w["transformer.wpe.weight"][:T]
            for i in range(config.n_layer):
                p = f"transformer.h.{i}."
                h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
                qkv = h @ w[p + "attn.c_attn.weight"].T + w[p + "attn.c_attn.bias"]
                q, k, v = (split_heads(t, config.n_head) for t in qkv.split(C, dim=-1))
                heads = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
                x = x + (heads @ w[p + "attn.c_proj.weight"].T + w[p + "attn.c_proj.bias"])
                h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
                h = gelu(h @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"])
                x = x + (h @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"])
            x = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
            return x @ w["transformer.wte.weight"].T  # the head, tied to the embedding

        check_gpt_forward(gpt_forward)
    """
    model, tokenizer = shipped(model, tokenizer)
    idx = batch_of(tokenizer)
    failed = gpt_mismatch(fn, model, idx)
    if failed is not None:
        return failed
    n = model.config.n_layer
    return right(f"Your gpt_forward gives the shipped model's logits on a batch of "
                 f"{idx.shape[0]} lines (to {GPT_TOLERANCE:g}): embeddings and positions, {n} "
                 "blocks of two residual sums, the final norm and the tied head. That is the "
                 "whole GPT; lesson 8 trains it.")
