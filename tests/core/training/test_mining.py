"""Hard-negative mining: positives never returned, counts/sources/skip_top as configured,
deterministic sampling, triples, readers and the ``jacolbert mine`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jacolbert_core.errors import JaColBERTError, MissingDependencyError
from jacolbert_core.testing import sample_corpus
from jacolbert_core.training import mining
from jacolbert_core.training.mining import (
    BM25Retriever,
    ColBERTRetriever,
    MinedQuery,
    Negative,
    NegativeSource,
    SentenceTransformerRetriever,
    export_colbert,
    mine,
    mine_hard_negatives,
    read_mined,
    summarize,
    to_triples,
    write_mined,
    write_triples,
)

# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def passages() -> dict[str, str]:
    return {d["id"]: d["text"] for d in sample_corpus()}


@pytest.fixture(scope="module")
def task(passages) -> tuple[dict[str, str], dict[str, list[str]]]:
    """One query per passage (its first sentence); every 4th query also has the next passage
    as a second positive."""
    ids = list(passages)
    queries, positives = {}, {}
    for n, pid in enumerate(ids):
        qid = f"q{n:02d}"
        queries[qid] = passages[pid].split("。")[0]
        positives[qid] = [pid] + ([ids[(n + 1) % len(ids)]] if n % 4 == 0 else [])
    return queries, positives


@pytest.fixture(scope="module")
def bm25(passages) -> BM25Retriever:
    return BM25Retriever(passages)


class ListRetriever:
    """Returns fixed rankings: ``rankings[query]``."""

    def __init__(self, rankings: dict[str, list[str]]):
        self.rankings = rankings
        self.calls: list[tuple[int, int]] = []

    def retrieve(self, queries, k):
        self.calls.append((len(queries), k))
        return [self.rankings[q][:k] for q in queries]


def check_invariants(records, positives, sources):
    by_name = {s.name: s for s in sources}
    for record in records:
        pids = [n.pid for n in record.negatives]
        assert len(pids) == len(set(pids)), "negatives must be unique"
        assert not set(pids) & set(positives[record.qid]), "a positive was returned"
        for negative in record.negatives:
            assert negative.rank > by_name[negative.source].skip_top
        counts = {name: 0 for name in by_name}
        for negative in record.negatives:
            counts[negative.source] += 1
        for name, count in counts.items():
            assert count <= by_name[name].n
        # listed source by source, by rank within a source
        order = [(list(by_name).index(n.source), n.rank) for n in record.negatives]
        assert order == sorted(order)


# --------------------------------------------------------------------------- selection


def test_selection_on_a_known_ranking():
    ranking = [f"p{i}" for i in range(1, 11)]
    corpus = {pid: pid for pid in ranking}
    retriever = ListRetriever({"q": ranking})
    source = NegativeSource("s", retriever, n=3, skip_top=2)
    [record] = mine({"a": "q"}, {"a": ["p4"]}, corpus, [source])
    # ranks 1-2 skipped, p4 is a positive: p3, p5, p6
    assert record.negatives == [
        Negative("p3", "s", 3),
        Negative("p5", "s", 5),
        Negative("p6", "s", 6),
    ]
    assert record.positives == ["p4"] and record.query == "q" and record.qid == "a"
    # asks deep enough to skip the top, the positive and fill n
    assert retriever.calls == [(1, 2 + 3 + 1)]


def test_second_source_skips_earlier_picks_and_fills_its_count():
    ranking = [f"p{i}" for i in range(1, 11)]
    corpus = {pid: pid for pid in ranking}
    first = NegativeSource("dense", ListRetriever({"q": ranking}), n=2)
    second = NegativeSource("bm25", ListRetriever({"q": ranking[::-1]}), n=3, skip_top=1)
    [record] = mine({"a": "q"}, {"a": ["p1", "p9"]}, corpus, [first, second])
    assert [(n.pid, n.source, n.rank) for n in record.negatives] == [
        ("p2", "dense", 2),
        ("p3", "dense", 3),
        ("p8", "bm25", 3),  # p10 (rank 1) skipped, p9 is a positive
        ("p7", "bm25", 4),
        ("p6", "bm25", 5),
    ]


def test_short_rankings_give_up_to_n():
    corpus = {f"p{i}": "x" for i in range(5)}
    source = NegativeSource("s", ListRetriever({"q": ["p0", "p1", "p2"]}), n=10)
    [record] = mine({"a": "q"}, {"a": ["p1"]}, corpus, [source])
    assert [n.pid for n in record.negatives] == ["p0", "p2"]
    assert summarize([record], [source])["queries_short"] == {"s": 1}


def test_depth_samples_within_the_window_deterministically():
    ranking = [f"p{i:02d}" for i in range(1, 41)]
    corpus = {pid: pid for pid in ranking}
    queries = {f"q{i}": "q" for i in range(20)}
    positives = {qid: ["p05"] for qid in queries}

    def run(seed, batch_size=256):
        source = NegativeSource("s", ListRetriever({"q": ranking}), n=4, skip_top=2, depth=20)
        return mine(queries, positives, corpus, [source], seed=seed, batch_size=batch_size)

    first = run(0)
    for record in first:
        ranks = [n.rank for n in record.negatives]
        assert len(ranks) == 4 and all(2 < r <= 20 for r in ranks) and ranks == sorted(ranks)
        assert "p05" not in [n.pid for n in record.negatives]
    assert run(0) == first
    assert run(0, batch_size=3) == first  # independent of batching
    assert run(1) != first
    # different queries draw different samples from the same ranking
    assert len({tuple(n.pid for n in r.negatives) for r in first}) > 1


def test_source_arguments_are_checked():
    retriever = ListRetriever({})
    with pytest.raises(ValueError, match="depth"):
        NegativeSource("s", retriever, n=3, skip_top=5, depth=5)
    with pytest.raises(ValueError, match="n must"):
        NegativeSource("s", retriever, n=-1)
    with pytest.raises(TypeError, match="retrieve"):
        NegativeSource("s", object(), n=1)
    with pytest.raises(ValueError, match="unique"):
        mine({"a": "q"}, {"a": ["p"]}, {"p": "x"}, [NegativeSource("s", retriever, 1)] * 2)


def test_input_mismatches_are_reported():
    source = NegativeSource("s", ListRetriever({"q": ["p"]}), n=1)
    with pytest.raises(JaColBERTError, match="same ids"):
        mine({"a": "q"}, {"b": ["p"]}, {"p": "x"}, [source])
    with pytest.raises(JaColBERTError, match="not in the corpus|in the corpus"):
        mine({"a": "q"}, {"a": ["zzz"]}, {"p": "x"}, [source])
    stranger = NegativeSource("s", ListRetriever({"q": ["elsewhere"]}), n=1)
    with pytest.raises(JaColBERTError, match="not in the corpus"):
        mine({"a": "q"}, {"a": ["p"]}, {"p": "x", "o": "y"}, [stranger])


# --------------------------------------------------------------------------- real retrievers


def test_bm25_mining_counts_skip_top_and_positives(passages, task, bm25):
    queries, positives = task
    source = NegativeSource("bm25", bm25, n=5, skip_top=2)
    records = mine(queries, positives, passages, [source])
    assert [r.qid for r in records] == list(queries)
    check_invariants(records, positives, [source])
    rankings = bm25.retrieve(list(queries.values()), len(passages))
    for record, ranking in zip(records, rankings, strict=True):
        expected = [
            (rank, pid)
            for rank, pid in enumerate(ranking, start=1)
            if rank > 2 and pid not in positives[record.qid]
        ][:5]
        assert [(n.rank, n.pid) for n in record.negatives] == expected
        assert len(record.negatives) == 5  # sample passages share many terms


def test_positives_in_the_window_are_never_negatives(passages, task, bm25):
    queries, _ = task
    # label the whole BM25 top 8 of every query as positive
    rankings = bm25.retrieve(list(queries.values()), 8)
    positives = {qid: ranking for qid, ranking in zip(queries, rankings, strict=True)}
    source = NegativeSource("bm25", bm25, n=6, skip_top=0)
    records = mine(queries, positives, passages, [source])
    check_invariants(records, positives, [source])
    assert all(min(n.rank for n in r.negatives) > 8 for r in records)


def test_dense_index_and_bm25_recipe(passages, task, sample_index):
    queries, positives = task
    queries = dict(list(queries.items())[::3])  # a third of them: dense search is the cost
    records = mine_hard_negatives(
        queries, positives, passages, dense=sample_index, n_dense=6, n_bm25=4, skip_top=1
    )
    sources = [
        NegativeSource("dense", ListRetriever({}), 6, 1),
        NegativeSource("bm25", ListRetriever({}), 4, 1),
    ]
    check_invariants(records, positives, sources)
    summary = summarize(records, sources)
    assert summary["per_source"]["dense"] == 6 * len(records)
    assert 0 < summary["per_source"]["bm25"] <= 4 * len(records)
    assert summary["queries_short"]["dense"] == 0


def test_colbert_retriever_builds_and_removes_a_temporary_index(passages, peaked_model):
    small = dict(list(passages.items())[:12])
    retriever = ColBERTRetriever.build(peaked_model, small)
    path = Path(retriever.index.path)
    assert path.exists()
    rankings = retriever.retrieve([small["doc-003"][:40], small["doc-007"][:40]], 5)
    assert [r[0] for r in rankings] == ["doc-003", "doc-007"]
    assert all(len(r) == 5 and len(set(r)) == 5 and set(r) <= set(small) for r in rankings)
    retriever.close()
    assert not path.parent.exists()


def test_sentence_transformers_is_optional(monkeypatch, passages):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingDependencyError, match="pip install sentence-transformers"):
        SentenceTransformerRetriever("intfloat/multilingual-e5-base", passages)


class CharEncoder:
    """A stand-in embedding model: hashed character counts."""

    def __init__(self):
        self.seen: list[str] = []

    def encode(self, texts, **kwargs):
        self.seen.extend(texts)
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for ch in text:
                out[i, ord(ch) % 64] += 1
        return out


def test_single_vector_models_rank_by_cosine(passages, task):
    queries, positives = task
    encoder = CharEncoder()
    retriever = SentenceTransformerRetriever(
        encoder, passages, query_prefix="query: ", passage_prefix="passage: "
    )
    assert encoder.seen[0].startswith("passage: ")
    source = NegativeSource("dense", retriever, n=3, skip_top=1)
    records = mine(queries, positives, passages, [source])
    check_invariants(records, positives, [source])
    assert all(len(r.negatives) == 3 for r in records)
    assert encoder.seen[-1].startswith("query: ")
    [ranking] = retriever.retrieve(["京都の紅葉"], len(passages) + 5)
    assert sorted(ranking) == sorted(passages)


# --------------------------------------------------------------------------- outputs


@pytest.fixture()
def records() -> list[MinedQuery]:
    return [
        MinedQuery(
            "a", "問い一", ["p1", "p2"], [Negative("p3", "dense", 4), Negative("p4", "bm25", 5)]
        ),
        MinedQuery("b", "問い二", ["p4"], [Negative("p1", "bm25", 2)]),
    ]


def test_jsonl_round_trip_and_format(tmp_path, records):
    assert write_mined(tmp_path / "m.jsonl", records) == 2
    lines = (tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {
        "qid": "a",
        "query": "問い一",
        "positives": ["p1", "p2"],
        "negatives": [
            {"pid": "p3", "source": "dense", "rank": 4},
            {"pid": "p4", "source": "bm25", "rank": 5},
        ],
    }
    assert "問い一" in lines[0]  # not \\u-escaped
    assert read_mined(tmp_path / "m.jsonl") == records
    (tmp_path / "bad.jsonl").write_text('{"qid": "a"}\n')
    with pytest.raises(JaColBERTError, match="mined-negatives record"):
        read_mined(tmp_path / "bad.jsonl")


def test_triples(tmp_path, records):
    assert to_triples(records) == [
        ("a", "p1", "p3"),
        ("a", "p1", "p4"),
        ("a", "p2", "p3"),
        ("a", "p2", "p4"),
        ("b", "p4", "p1"),
    ]
    assert to_triples(records, max_negatives=1) == [
        ("a", "p1", "p3"),
        ("a", "p2", "p3"),
        ("b", "p4", "p1"),
    ]
    corpus = {f"p{i}": f"文{i}" for i in range(1, 5)}
    assert to_triples(records, corpus)[0] == ("問い一", "文1", "文3")
    assert write_triples(tmp_path / "t.jsonl", to_triples(records)) == 5
    first = (tmp_path / "t.jsonl").read_text().splitlines()[0]
    assert json.loads(first) == ["a", "p1", "p3"]


def test_export_colbert_uses_line_numbers(tmp_path, records):
    corpus = {f"p{i}": f"文 {i}\n改行" for i in range(1, 5)}
    paths = export_colbert(records, corpus, tmp_path / "cb")
    collection = paths["collection.tsv"].read_text(encoding="utf-8").splitlines()
    assert collection[0] == "0\t文 1 改行" and len(collection) == 4
    assert paths["queries.tsv"].read_text(encoding="utf-8").splitlines() == [
        "0\t問い一",
        "1\t問い二",
    ]
    triples = [json.loads(x) for x in paths["triples.jsonl"].read_text().splitlines()]
    assert triples[0] == [0, 0, 2]  # a, p1, p3
    ids = json.loads(paths["ids.json"].read_text())
    for qid, pos, neg in triples:
        record = records[qid]
        assert ids["pids"][pos] in record.positives
        assert ids["pids"][neg] in [n.pid for n in record.negatives]
    nway = export_colbert(records, corpus, tmp_path / "nw", nway=True)["triples.jsonl"]
    assert [json.loads(x) for x in nway.read_text().splitlines()] == [
        [0, 0, 2, 3],
        [0, 1, 2, 3],
        [1, 3, 0],
    ]


# --------------------------------------------------------------------------- CLI


def cli(argv: list[str]) -> int:
    from jacolbert_core.training.cli_commands import register

    parser = argparse.ArgumentParser(prog="jacolbert")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_mine_command(tmp_path, passages, task, sample_index, capsys):
    queries, positives = task
    with open(tmp_path / "passages.jsonl", "w", encoding="utf-8") as f:
        for pid, text in passages.items():
            f.write(json.dumps({"id": pid, "text": text}, ensure_ascii=False) + "\n")
    (tmp_path / "queries.tsv").write_text(
        "".join(f"{q}\t{t}\n" for q, t in list(queries.items())[:12]), encoding="utf-8"
    )
    (tmp_path / "qrels.tsv").write_text(
        "".join(f"{q}\t{p}\n" for q, ps in positives.items() for p in ps), encoding="utf-8"
    )
    argv = [
        "mine",
        "--queries", str(tmp_path / "queries.tsv"),
        "--qrels", str(tmp_path / "qrels.tsv"),
        "--corpus", str(tmp_path / "passages.jsonl"),
        "--out", str(tmp_path / "mined.jsonl"),
        "--dense-index", str(sample_index.path),
        "--dense", "5", "--bm25", "3", "--skip-top", "1", "--depth", "15", "--seed", "7",
        "--triples", str(tmp_path / "triples.jsonl"),
    ]  # fmt: skip
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "mined 12 queries" in out and "queries/s" in out
    records = read_mined(tmp_path / "mined.jsonl")
    assert [r.qid for r in records] == list(queries)[:12]
    sources = [
        NegativeSource("dense", ListRetriever({}), 5, 1, 15),
        NegativeSource("bm25", ListRetriever({}), 3, 1, 15),
    ]
    check_invariants(records, positives, sources)
    assert {n.source for r in records for n in r.negatives} == {"dense", "bm25"}
    triples = (tmp_path / "triples.jsonl").read_text().splitlines()
    assert len(triples) == len(to_triples(records))

    # BM25 only, positives read from a labelled queries file
    with open(tmp_path / "labelled.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            row = {"id": qid, "text": text, "relevant": positives[qid]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    argv = [
        "mine",
        "--queries", str(tmp_path / "labelled.jsonl"),
        "--corpus", str(tmp_path / "passages.jsonl"),
        "--out", str(tmp_path / "bm25.jsonl"),
        "--bm25", "4",
    ]  # fmt: skip
    assert cli(argv) == 0
    records = read_mined(tmp_path / "bm25.jsonl")
    assert all(len(r.negatives) == 4 for r in records)
    assert {n.source for r in records for n in r.negatives} == {"bm25"}
    assert "BM25 negatives only" in capsys.readouterr().err
    first_run = (tmp_path / "bm25.jsonl").read_bytes()
    assert cli(argv + ["--depth", "12", "--seed", "3"]) == 0
    sampled = (tmp_path / "bm25.jsonl").read_bytes()
    assert sampled != first_run
    assert cli(argv + ["--depth", "12", "--seed", "3"]) == 0
    assert (tmp_path / "bm25.jsonl").read_bytes() == sampled  # same seed, same file


def test_mine_command_rejects_bad_counts(tmp_path):
    (tmp_path / "q.tsv").write_text("q\tx\n")
    with pytest.raises(ValueError, match="--bm25"):
        cli(["mine", "--queries", str(tmp_path / "q.tsv"), "--corpus", str(tmp_path / "q.tsv"),
             "--out", str(tmp_path / "o"), "--bm25", "-1"])  # fmt: skip


def test_module_docstring_documents_the_format():
    doc = mining.__doc__
    for key in ('"qid"', '"query"', '"positives"', '"negatives"', '"pid"', '"source"', '"rank"'):
        assert key in doc


def test_dense_model_kind_is_guessed(tmp_path, peaked_model):
    from jacolbert_core.training.cli_commands import _guess_dense_type

    assert _guess_dense_type(peaked_model.name) == "colbert"  # has artifact.metadata
    assert _guess_dense_type("intfloat/multilingual-e5-base") == "colbert"  # hub id: ours
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text(
        '[{"type": "sentence_transformers.models.Pooling"}]'
    )
    assert _guess_dense_type(str(tmp_path / "st")) == "sentence-transformers"
    (tmp_path / "pylate").mkdir()
    (tmp_path / "pylate" / "modules.json").write_text('[{"type": "pylate.models.Dense"}]')
    assert _guess_dense_type(str(tmp_path / "pylate")) == "colbert"


def test_dense_argument_must_be_a_retriever(passages):
    with pytest.raises(TypeError, match="Retriever, a jacolbert Index or a ColBERT"):
        mining.as_retriever("not a model", passages)
    retriever = ListRetriever({})
    assert mining.as_retriever(retriever, passages) is retriever
