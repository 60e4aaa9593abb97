"""Translating English number words to French ones: the data, the tokenizer, greedy and beam."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from course_lib.files import write_text
from course_lib.model import eval_mode
from course_lib.sampling import SamplingParams, generate_batch, sample_next
from course_lib.sampling.beam import MAX_BEAMS, split_candidates
from course_lib.seq2seq import Seq2Seq, cross_attention_weights
from course_lib.tokenization import CharTokenizer
from course_lib.train import TrainConfig, lr_at, make_optimizer, seeded
from course_lib.validation import check_float, check_int, check_seed

MAX_NUMBER = 9999  # the task: every number 0..9999
N_HELD_OUT = 1000  # numbers set aside; training never sees them, in either language
SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD, BOS, EOS = 0, 1, 2


def number_pair(n: int) -> tuple[str, str]:
    """(English words, French words) of n: 97 -> ("ninety-seven", "quatre-vingt-dix-sept")."""
    from num2words import num2words

    return num2words(n, lang="en"), num2words(n, lang="fr")


def translation_split(seed: int = 0, n_held_out: int = N_HELD_OUT,
                      max_number: int = MAX_NUMBER) -> tuple[list, list]:
    """(train_pairs, held_out_pairs) of (English, French) number words, deterministic.

    The numbers 0..max_number are shuffled with seed; the first n_held_out are held out, the
    rest (9,000 with the defaults) train. Both lists are sorted by number.
    """
    max_number = check_int("max_number", max_number, minimum=1)
    n_held_out = check_int("n_held_out", n_held_out, minimum=0, maximum=max_number)
    numbers = list(range(max_number + 1))
    random.Random(check_int("seed", seed, minimum=0)).shuffle(numbers)
    held_out, train = sorted(numbers[:n_held_out]), sorted(numbers[n_held_out:])
    return [number_pair(n) for n in train], [number_pair(n) for n in held_out]


class TranslationTokenizer:
    """Characters of both languages, after three special tokens: <pad> 0, <bos> 1, <eos> 2."""

    def __init__(self, chars: str):
        self.chars = CharTokenizer(sorted(set(chars)))
        self.vocab_size = len(SPECIALS) + self.chars.vocab_size

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> TranslationTokenizer:
        return cls("".join(a + b for a, b in pairs))

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without <bos> or <eos>; a character not in the vocabulary is a
        ValueError."""
        return [i + len(SPECIALS) for i in self.chars.encode(text)]

    def decode(self, ids) -> str:
        """The text of ids up to the first <eos>, the special tokens left out."""
        ids = [int(i) for i in ids]
        if EOS in ids:
            ids = ids[: ids.index(EOS)]
        return self.chars.decode([i - len(SPECIALS) for i in ids if i >= len(SPECIALS)])

    def save(self, path: str | os.PathLike) -> None:
        data = {"specials": list(SPECIALS), "chars": "".join(self.chars.chars)}
        write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TranslationTokenizer:
        data = json.loads(Path(path).read_text("utf-8"))
        if data.get("specials") != list(SPECIALS):
            raise ValueError(f"{path}: expected the special tokens {list(SPECIALS)}")
        return cls(data["chars"])

    def __repr__(self) -> str:
        return f"TranslationTokenizer(vocab_size={self.vocab_size})"


def make_batch(tokenizer: TranslationTokenizer, pairs: Sequence[tuple[str, str]]) -> tuple:
    """(src, src_mask, tgt, targets) tensors for teacher forcing on pairs.

    src is padded with <pad> (src_mask False there); tgt is <bos> + the French, targets the
    French + <eos>, -1 after it, so padding never counts in the loss.
    """
    sources = [tokenizer.encode(a) for a, _ in pairs]
    targets = [tokenizer.encode(b) + [EOS] for _, b in pairs]
    S, T = max(map(len, sources)), max(map(len, targets))
    src = torch.full((len(pairs), S), PAD)
    tgt = torch.full((len(pairs), T), PAD)
    out = torch.full((len(pairs), T), -1)
    for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
        src[i, : len(s)] = torch.tensor(s)
        tgt[i, : len(t)] = torch.tensor([BOS] + t[:-1])
        out[i, : len(t)] = torch.tensor(t)
    return src, src != PAD, tgt, out


def _sources(model: Seq2Seq, tokenizer: TranslationTokenizer, texts: Sequence[str]) -> list:
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text to translate must be a non-empty string, got {text!r:.60}")
        if len(text) > model.config.block_size:
            raise ValueError(f"text is {len(text)} characters; the model reads at most "
                             f"{model.config.block_size}")
    return [(text, "") for text in texts]


@torch.no_grad()
def translate_batch(model: Seq2Seq, tokenizer: TranslationTokenizer, texts: Sequence[str],
                    num_beams: int = 1, length_penalty: float = 1.0) -> list[str]:
    """translate() of each text; greedy decoding runs them all as one padded batch."""
    num_beams = check_int("num_beams", num_beams, minimum=1, maximum=MAX_BEAMS)
    length_penalty = check_float("length_penalty", length_penalty)
    src, src_mask, _, _ = make_batch(tokenizer, _sources(model, tokenizer, texts))
    if num_beams > 1:
        return [_beam_search(model, tokenizer, src[i:i + 1, : int(src_mask[i].sum())],
                             num_beams, length_penalty) for i in range(len(texts))]
    greedy = SamplingParams(temperature=0.0)
    with eval_mode(model):
        src, src_mask = src.to(model.device), src_mask.to(model.device)
        cache = model.new_cache(model.encode(src, src_mask), src_mask)
        token = torch.full((len(texts), 1), BOS, device=model.device)
        out, done = [], torch.zeros(len(texts), dtype=torch.bool, device=model.device)
        for _ in range(model.config.target_block_size):
            logits = model.decode(token, None, cache=cache)[:, -1]
            token = sample_next(logits, greedy)[:, None]  # the one place a token is chosen
            out.append(token)
            done |= token[:, 0] == EOS
            if bool(done.all()):
                break
    return [tokenizer.decode(row) for row in torch.cat(out, dim=1).tolist()]


def translate(model: Seq2Seq, tokenizer: TranslationTokenizer, text: str, num_beams: int = 1,
              length_penalty: float = 1.0) -> str:
    """The French of English number words: greedy (num_beams=1) or beam search.

    Greedy takes the most likely token at each step (sample_next at temperature 0); beam
    search keeps num_beams partial translations and ranks finished ones by their total
    log-probability / (tokens, <eos> included) ** length_penalty, as course_lib.sampling's
    beam_search does. Empty text, a character outside the vocabulary or num_beams < 1 is a
    ValueError.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    return translate_batch(model, tokenizer, [text], num_beams, length_penalty)[0]


def _beam_search(model: Seq2Seq, tokenizer: TranslationTokenizer, src: torch.Tensor,
                 num_beams: int, length_penalty: float) -> str:
    """Beam search for one source (1, S): beam.py's rules (split_candidates), on a decoder
    with its cache."""
    max_new = model.config.target_block_size
    with eval_mode(model):
        src = src.to(model.device)
        cache = model.new_cache(model.encode(src))
        beams, scores = [[BOS]], torch.zeros(1, device=model.device)
        finished: list[tuple[float, list[int]]] = []
        for step in range(max_new):
            last = torch.tensor([[b[-1]] for b in beams], device=model.device)
            logp = torch.log_softmax(model.decode(last, None, cache=cache)[:, -1].float(), -1)
            total = (scores[:, None] + logp).reshape(-1)
            top, flat = torch.topk(total, min(2 * num_beams, total.numel()))
            norm = (step + 1) ** length_penalty
            top = top.tolist()
            ending, going = split_candidates(flat.tolist(), logp.shape[-1], num_beams, {EOS},
                                             last=step == max_new - 1)
            finished += [(top[rank] / norm, beams[beam] + [token]) for rank, beam, token in ending]
            rows = [beams[beam] + [token] for _, beam, token in going]
            row_scores = [top[rank] for rank, _, _ in going]
            parents = [beam for _, beam, _ in going]
            finished.sort(key=lambda f: -f[0])  # stable: earlier finishers win ties
            del finished[num_beams:]
            if not rows:
                break
            # ends once num_beams have finished and no running one scores better now
            if len(finished) == num_beams and row_scores[0] / norm <= finished[-1][0]:
                break
            beams, scores = rows, torch.tensor(row_scores, device=model.device)
            cache.reorder(torch.tensor(parents, device=model.device))
    return tokenizer.decode(finished[0][1])


def train_on_pairs(model: torch.nn.Module,
                   loss_of: Callable[[torch.nn.Module, list], torch.Tensor],
                   pairs: Sequence[tuple[str, str]], config: TrainConfig, *, seed: int = 0,
                   log_every: int = 50, name: str = "") -> tuple[list[float], float]:
    """config.max_steps steps of course_lib.train's AdamW and schedule on random batches of
    config.batch_size pairs, loss_of(model, batch) giving the loss; prints progress every
    log_every steps. Returns (each step's loss, seconds). course_lib.train cuts one token
    stream into windows; a translation batch is a set of pairs, hence this short loop."""
    pairs, seed = list(pairs), check_seed("seed", seed)
    optimizer = make_optimizer(model, config, next(model.parameters()).device)
    rng, losses, start = random.Random(seed), [], time.perf_counter()
    model.train()
    with seeded(seed):  # the batches and any dropout: the seed fixes the whole run
        for step in range(config.max_steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            loss = loss_of(model, rng.sample(pairs, config.batch_size))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            if log_every and (step % log_every == 0 or step == config.max_steps - 1):
                print(f"{name + ': ' if name else ''}step {step:4d}  loss {losses[-1]:.3f}  "
                      f"{time.perf_counter() - start:5.1f} s", flush=True)
    model.eval()
    return losses, time.perf_counter() - start


def evaluate_translator(model: Seq2Seq, tokenizer: TranslationTokenizer,
                        pairs: Sequence[tuple[str, str]], num_beams: int = 1) -> dict:
    """exact_match (fraction of translations equal to the reference), chrF and BLEU
    (sacrebleu's corpus scores, 0..100) of model on pairs."""
    import sacrebleu

    sources, references = [a for a, _ in pairs], [b for _, b in pairs]
    got = translate_batch(model, tokenizer, sources, num_beams)
    exact = sum(g == r for g, r in zip(got, references, strict=True)) / len(pairs)
    return {"exact_match": exact,
            "chrf": sacrebleu.corpus_chrf(got, [references]).score,
            "bleu": sacrebleu.corpus_bleu(got, [references]).score,
            "n": len(pairs)}


def cross_attention_map(model: Seq2Seq, tokenizer: TranslationTokenizer, source: str,
                        target: str | None = None) -> dict:
    """Where the decoder looks in the source while it writes each target character.

    target None: the model's own greedy translation. Returns source_tokens (the source's
    characters), written (each target character, then "<eos>": row t is the step writing
    written[t]), weights (n_decoder_layer, n_head, T, S) as a tensor whose rows sum to 1, and
    target. Empty text or a character outside the vocabulary is a ValueError.
    """
    (src_text, _), = _sources(model, tokenizer, [source])
    if target is None:
        target = translate(model, tokenizer, src_text)
    if not isinstance(target, str):
        raise ValueError(f"target must be a string, got {type(target).__name__}")
    if len(target) + 1 > model.config.target_block_size:
        raise ValueError(f"target is {len(target)} characters; the model writes at most "
                         f"{model.config.target_block_size - 1}")
    src, src_mask, tgt, _ = make_batch(tokenizer, [(src_text, target)])
    with eval_mode(model):
        weights, _ = cross_attention_weights(model, src.to(model.device), tgt.to(model.device),
                                             src_mask.to(model.device))
    return {"source_tokens": list(src_text), "written": list(target) + ["<eos>"],
            "weights": weights[:, 0].cpu(), "target": target}


# ----- the same task for a decoder-only model: "English <bos> French <eos>" as one text -------

def decoder_only_batch(tokenizer: TranslationTokenizer,
                       pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, targets) for a GPT reading each pair as one sequence: the English, <bos> as the
    separator, the French, <eos>; padded with <pad> at the end. targets are the next tokens
    on the French and <eos> only (-1 on the source and the padding), so the loss is the one
    the encoder-decoder trains on."""
    rows = [tokenizer.encode(a) + [BOS] + tokenizer.encode(b) + [EOS] for a, b in pairs]
    T = max(map(len, rows)) - 1
    ids = torch.full((len(pairs), T), PAD)
    out = torch.full((len(pairs), T), -1)
    for i, ((a, _), row) in enumerate(zip(pairs, rows, strict=True)):
        n = len(row) - 1
        ids[i, :n] = torch.tensor(row[:-1])
        start = len(tokenizer.encode(a))  # the position of <bos>: it predicts the first French
        out[i, start:n] = torch.tensor(row[start + 1:])
    return ids, out


def translate_decoder_only(model, tokenizer: TranslationTokenizer, texts: Sequence[str],
                           max_new_tokens: int = 40) -> list[str]:
    """Greedy translations by a GPT trained on decoder_only_batch: the prompt is the English
    then <bos>; it writes until <eos>. All texts run as one batch (generate_batch)."""
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    prompts = [tokenizer.encode(t) + [BOS] for t in texts]
    out = generate_batch(model, prompts, max_new_tokens, temperature=0.0, stop_ids=(EOS,))
    return [tokenizer.decode(seq[len(p):]) for p, seq in zip(prompts, out, strict=True)]


def exact_match(got: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of translations equal to their reference, character for character."""
    if len(got) != len(references) or not references:
        raise ValueError("give as many translations as references, at least one")
    return sum(g == r for g, r in zip(got, references, strict=True)) / len(references)
