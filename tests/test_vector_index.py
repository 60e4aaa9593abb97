"""The faiss vector index of course_lib.embeddings against a numpy brute force: exact search equal,
approximate search measured by recall, and an index saved and loaded unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

faiss = pytest.importorskip("faiss")

from course_lib import embeddings as E  # noqa: E402


def _unit_rows(n: int, d: int, seed: int, clusters: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    if clusters:  # real embeddings cluster; uniform random directions are HNSW's worst case
        centres = rng.standard_normal((clusters, d)).astype(np.float32) * 3
        x += centres[rng.integers(0, clusters, n)]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_top_k(vectors: np.ndarray, queries: np.ndarray, k: int):
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


@pytest.fixture(scope="module")
def data():
    return _unit_rows(2000, 48, seed=0, clusters=20), _unit_rows(50, 48, seed=1, clusters=20)


def test_faiss_exact_search_equals_numpy_brute_force(data):
    vectors, queries = data
    index = E.vector_index(vectors, "exact")
    assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == 2000 and index.d == 48
    scores, rows = E.index_search(index, queries, k=10)
    want_scores, want_rows = _numpy_top_k(vectors, queries, 10)
    assert scores.shape == rows.shape == (50, 10)
    np.testing.assert_allclose(scores.numpy(), want_scores, atol=1e-5)
    # Random float data has no exact ties: the same rows, in the same order.
    np.testing.assert_array_equal(rows.numpy(), want_rows)
    # course_lib's own brute force (one torch matrix product) agrees as well.
    ours_scores, ours_rows = E.exact_search(torch.from_numpy(vectors), queries, 10)
    np.testing.assert_array_equal(ours_rows.numpy(), want_rows)
    np.testing.assert_allclose(ours_scores.numpy(), want_scores, atol=1e-5)
    assert E.distances_per_query(index, queries, 10) == 2000


def test_exact_search_keeps_ties_in_row_order():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    scores, rows = E.exact_search(vectors, [1.0, 0.0], k=3)
    assert rows.tolist() == [[0, 2, 1]] and scores.tolist() == [[1.0, 1.0, 0.0]]


def test_hnsw_is_approximate_and_buys_recall_with_work(data):
    vectors, queries = data
    truth = _numpy_top_k(vectors, queries, 10)[1]
    index = E.vector_index(vectors, "hnsw", neighbors=16, ef_search=4)
    assert isinstance(index, faiss.IndexHNSWFlat) and index.hnsw.efSearch == 4
    measured = []
    for ef in (4, 16, 64, 256):
        index.hnsw.efSearch = ef
        found = E.index_search(index, queries, 10)[1]
        measured.append((E.distances_per_query(index, queries, 10), E.recall_at_k(found, truth)))
    work, recall = zip(*measured, strict=True)
    assert list(work) == sorted(work) and max(work) < 2000  # fewer comparisons than exact
    assert list(recall) == sorted(recall) and recall[0] < 1.0 and recall[-1] > 0.95


def test_hnsw_build_repeats_exactly(data):
    vectors, queries = data
    a = E.index_search(E.vector_index(vectors, "hnsw"), queries, 10)[1]
    b = E.index_search(E.vector_index(vectors, "hnsw"), queries, 10)[1]
    assert torch.equal(a, b)


def test_recall_at_k_counts_the_true_neighbours_found():
    assert E.recall_at_k([[1, 2, 3], [4, 5, 6]], [[3, 2, 1], [4, 5, 6]]) == 1.0
    assert E.recall_at_k([[1, 2, 9], [7, 8, 9]], [[1, 2, 3], [4, 5, 6]]) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="found and truth"):
        E.recall_at_k([[1, 2]], [[1, 2, 3]])


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_saved_index_loads_and_answers_the_same(data, tmp_path, kind):
    vectors, queries = data
    index = E.vector_index(vectors, kind, ef_search=40)
    path = E.save_index(index, tmp_path / f"{kind}.faiss")
    assert path.is_file() and path.stat().st_size > vectors.nbytes  # the vectors are in the file
    loaded = E.load_index(path)
    assert type(loaded) is type(index) and loaded.ntotal == index.ntotal
    for a, b in zip(E.index_search(loaded, queries, 10), E.index_search(index, queries, 10),
                    strict=True):
        assert torch.equal(a, b)
    if kind == "hnsw":
        assert loaded.hnsw.efSearch == 40


def test_bad_index_arguments(data, tmp_path):
    vectors, queries = data
    with pytest.raises(ValueError, match="kind must be one of"):
        E.vector_index(vectors, "ivf")
    with pytest.raises(ValueError, match="queries must have 48 columns"):
        E.index_search(E.vector_index(vectors), queries[:, :10], 5)
    with pytest.raises(ValueError, match="k must be"):
        E.index_search(E.vector_index(vectors), queries, 0)
    with pytest.raises(ValueError, match="vectors holds NaN"):
        E.vector_index(np.full((3, 4), np.nan, dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="path"):
        E.load_index(tmp_path / "missing.faiss")
    junk = tmp_path / "junk.faiss"
    junk.write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a faiss index"):
        E.load_index(junk)
