"""Japanese BM25: MeCab terms, hand-computed scores, deterministic ties, files without pickles."""

from __future__ import annotations

import math
import sys
import threading
import unicodedata

import numpy as np
import pytest

from jacolbert_core.errors import JAPANESE_TOKENIZER_HINT, MissingDependencyError
from jacolbert_core.testing import sample_corpus
from jacolbert_core.text import lexical
from jacolbert_core.text.lexical import BM25, japanese_terms

# --------------------------------------------------------------------------- terms


def test_terms_are_nfkc_lowercased_mecab_surfaces_without_punctuation():
    assert japanese_terms(["京都の紅葉は、例年１１月！「ＡＢＣ」・iPhone→★"]) == [
        ["京都", "の", "紅葉", "は", "例年", "11", "月", "abc", "iphone"]
    ]
    # half-width katakana widened, ㈱ -> (株) whose brackets are dropped
    assert japanese_terms(["ｶﾀｶﾅと㈱"]) == [["カタカナ", "と", "株"]]


def test_terms_of_empty_and_punctuation_only_texts_are_empty():
    assert japanese_terms(["", "   \n\t　", "。、！？「」…", "猫"]) == [[], [], [], ["猫"]]
    assert japanese_terms([]) == []


def test_terms_reject_a_bare_string_and_non_strings():
    with pytest.raises(TypeError, match="sequence of strings"):
        japanese_terms("猫と犬")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        japanese_terms(["猫", 3])


def test_mixed_tokens_keep_their_letters():
    # a token is dropped only when every character is punctuation or a symbol
    terms = japanese_terms(["C++とNode.jsの100%互換"])[0]
    assert "c" in terms or "c++" in terms
    assert all(any(unicodedata.category(ch)[0] not in "PS" for ch in t) for t in terms)


def test_terms_are_thread_safe():
    texts = [d["text"] for d in sample_corpus()]
    expected = japanese_terms(texts)
    results: list = [None] * 4

    def work(i: int) -> None:
        results[i] = japanese_terms(texts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)


def test_missing_mecab_names_the_packages(monkeypatch):
    monkeypatch.setattr(lexical, "_TAGGERS", threading.local())
    monkeypatch.setitem(sys.modules, "fugashi", None)
    with pytest.raises(MissingDependencyError) as info:
        japanese_terms(["猫"])
    assert str(info.value) == JAPANESE_TOKENIZER_HINT
    assert "fugashi" in str(info.value) and "unidic-lite" in str(info.value)


def test_missing_bm25s_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm25s", None)
    with pytest.raises(MissingDependencyError, match="pip install bm25s"):
        BM25.build(["猫"])


# --------------------------------------------------------------------------- scoring


def lucene_bm25(tf: int, df: int, n: int, dl: int, avgdl: float, k1=1.5, b=0.75) -> float:
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def test_scores_match_hand_computed_bm25():
    texts = ["猫と犬", "猫と猫と鳥", "魚"]
    assert japanese_terms(texts) == [["猫", "と", "犬"], ["猫", "と", "猫", "と", "鳥"], ["魚"]]
    bm25 = BM25.build(texts)
    avgdl = (3 + 5 + 1) / 3
    [ranking] = bm25.search("猫", k=10)
    assert [i for i, _ in ranking] == [1, 0]  # "魚" shares no term: not returned
    assert ranking[0][1] == pytest.approx(lucene_bm25(2, 2, 3, 5, avgdl), rel=1e-6)
    assert ranking[1][1] == pytest.approx(lucene_bm25(1, 2, 3, 3, avgdl), rel=1e-6)
    # query terms add up (猫, と, 犬); a term repeated in the query counts twice
    assert bm25.scores("猫と犬")[0] == pytest.approx(
        2 * lucene_bm25(1, 2, 3, 3, avgdl) + lucene_bm25(1, 1, 3, 3, avgdl), rel=1e-6
    )
    assert bm25.scores("魚と魚")[2] == pytest.approx(2 * lucene_bm25(1, 1, 3, 1, avgdl), rel=1e-6)


def test_k1_and_b_are_used():
    texts = ["猫と犬", "猫と猫と鳥", "魚"]
    bm25 = BM25.build(texts, k1=0.9, b=0.4)
    assert (bm25.k1, bm25.b) == (0.9, 0.4)
    [ranking] = bm25.search("猫", k=1)
    assert ranking[0][1] == pytest.approx(lucene_bm25(2, 2, 3, 5, 3.0, k1=0.9, b=0.4), rel=1e-6)
    with pytest.raises(ValueError, match="0 <= b <= 1"):
        BM25.build(texts, b=1.5)


def test_ties_are_broken_by_position_even_at_the_cut():
    texts = ["魚"] + ["猫と犬"] * 5 + ["猫と犬と犬"]
    bm25 = BM25.build(texts)
    [ranking] = bm25.search("猫", k=3)
    assert [i for i, _ in ranking] == [1, 2, 3]  # five equal scores, the first three kept
    [ranking] = bm25.search("犬", k=2)
    assert [i for i, _ in ranking] == [6, 1]
    assert bm25.search("犬", k=7) == bm25.search("犬", k=7)


def test_search_shapes_and_arguments():
    bm25 = BM25.build(["猫と犬", "猫と猫と鳥", "魚"])
    assert len(bm25) == 3
    assert bm25.search(["猫", "象", "。"], k=5) == [bm25.search("猫", k=5)[0], [], []]
    assert bm25.search([], k=3) == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            bm25.search("猫", k=bad)
    scores = bm25.scores("猫")
    assert scores.shape == (3,) and scores[2] == 0
    assert [i for i, _ in bm25.search("猫")[0]] == list(np.argsort(-scores)[:2])
    with pytest.raises(ValueError, match="empty"):
        BM25.build([])
    with pytest.raises(ValueError, match="no indexable terms"):
        BM25.build(["。", "！"])
    with pytest.raises(TypeError):
        BM25.build("猫と犬")


def test_sentence_of_a_passage_finds_that_passage_first():
    docs = sample_corpus()
    bm25 = BM25.build([d["text"] for d in docs])
    queries = [d["text"].split("。")[1] or d["text"] for d in docs]  # each doc's 2nd sentence
    rankings = bm25.search(queries, k=3)
    assert [r[0][0] for r in rankings] == list(range(len(docs)))
    assert all(r[0][1] > r[1][1] for r in rankings)


# --------------------------------------------------------------------------- files


def test_save_and_load_round_trip_without_pickles(tmp_path):
    docs = sample_corpus()
    bm25 = BM25.build([d["text"] for d in docs])
    queries = ["パスポートの申請に必要な書類", "京都の紅葉", "新幹線の予約"]
    bm25.save(tmp_path / "bm25")
    files = sorted(p.name for p in (tmp_path / "bm25").iterdir())
    assert lexical.CONFIG_FILE in files
    arrays = [p for p in (tmp_path / "bm25").iterdir() if p.suffix == ".npy"]
    assert arrays
    for path in arrays:
        array = np.load(path, allow_pickle=False)  # would raise on a pickled object array
        assert array.dtype != object
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt"))]
    for mmap in (False, True):
        loaded = BM25.load(tmp_path / "bm25", mmap=mmap)
        assert len(loaded) == len(docs)
        assert loaded.search(queries, k=5) == bm25.search(queries, k=5)


def test_load_refuses_other_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="jacolbert_bm25.json"):
        BM25.load(tmp_path)
    bm25 = BM25.build(["猫と犬"])
    bm25.save(tmp_path / "x")
    config = tmp_path / "x" / lexical.CONFIG_FILE
    config.write_text(config.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ValueError, match="format version"):
        BM25.load(tmp_path / "x")
