"""Importing colbert-ai / RAGatouille indexes (golden fixture: tests/fixtures/plaid_index/, made
by tests/fixtures/make_plaid_golden.py with colbert-ai 0.2.22's Indexer and Searcher)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jacolbert_core import ColBERT
from jacolbert_core.cli import main
from jacolbert_core.index.index import Index
from jacolbert_core.index.plaid_import import PlaidImportError, import_plaid_index
from jacolbert_core.testing import make_tiny_checkpoint
from tests.fixtures.make_parity_golden import checkpoint_digest

FIXTURE = Path(__file__).parents[2] / "fixtures" / "plaid_index"
TSV = FIXTURE / "collection.tsv"
SCORE_TOLERANCE = 1e-3
PWNED = "JACOLBERT_TEST_UNPICKLED"


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((FIXTURE / "searcher_golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def plaid_checkpoint(tmp_path_factory: pytest.TempPathFactory, golden) -> Path:
    path = make_tiny_checkpoint(
        tmp_path_factory.mktemp("plaid") / "ckpt", **golden["checkpoint_kwargs"]
    )
    assert checkpoint_digest(path) == golden["checkpoint_sha256"], (
        "the tiny checkpoint no longer matches the one the plaid fixture was made from; "
        "re-run tests/fixtures/make_plaid_golden.py"
    )
    return path


@pytest.fixture(scope="module")
def plaid_model(plaid_checkpoint: Path) -> ColBERT:
    return ColBERT.from_pretrained(plaid_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, plaid_model) -> Index:
    """The fixture imported with its collection TSV. Shared: do not modify it in tests."""
    return import_plaid_index(
        FIXTURE, TSV, tmp_path_factory.mktemp("imported") / "index", plaid_model
    )


@pytest.fixture
def plaid_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture index folder."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "plaid"))


def tsv_texts() -> list[str]:
    return [line.split("\t", 1)[1] for line in TSV.read_text(encoding="utf-8").splitlines()]


def ranked(hits) -> tuple[list[int], np.ndarray]:
    return [int(h.document_id) for h in hits], np.array([h.score for h in hits])


def edit_config(plaid_dir: Path, **changes) -> None:
    path = plaid_dir / "metadata.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["config"].update(changes)
    path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


# -- same results as colbert-ai's Searcher -----------------------------------------------------


@pytest.mark.parametrize("golden_key", ["exhaustive", "exhaustive_all"])
@pytest.mark.parametrize("exact", [True, False])
def test_exhaustive_search_equals_colbert_searcher(imported, golden, golden_key, exact):
    """Every passage scored on both sides: identical order, scores within 1e-3 (measured:
    about 6e-6; both sides decompress to float32 on CPU)."""
    reference = golden[golden_key]
    k = len(reference["results"][0]["pids"])
    settings = {} if exact else reference["settings"]
    results = imported.search(golden["queries"], k=k, exact=exact, **settings)
    max_diff = 0.0
    for hits, ref in zip(results, reference["results"], strict=True):
        pids, scores = ranked(hits)
        assert pids == ref["pids"]
        max_diff = max(max_diff, float(np.abs(scores - np.array(ref["scores"])).max()))
    print(f"max |score - colbert-ai score| ({golden_key}, exact={exact}): {max_diff:.2e}")
    assert max_diff <= SCORE_TOLERANCE


def test_pruned_plaid_stages_equal_colbert_searcher(imported, golden):
    """With ndocs // 4 == k the final top-k is the top-k of the centroid-only ranking (stages
    1-3), which differs from the exhaustive top-k (~7 of 10 shared here): the candidate
    generation, pruning and approximate scores agree with the reference's."""
    reference = golden["pruned"]
    results = imported.search(
        golden["queries"], k=golden["k"], exact=False, **reference["settings"]
    )
    identical, overlaps, max_diff = 0, [], 0.0
    for hits, ref in zip(results, reference["results"], strict=True):
        pids, scores = ranked(hits)
        overlaps.append(len(set(pids) & set(ref["pids"])) / len(ref["pids"]))
        if pids == ref["pids"]:
            identical += 1
            max_diff = max(max_diff, float(np.abs(scores - np.array(ref["scores"])).max()))
    print(f"pruned: {identical}/{len(results)} identical, overlap {np.mean(overlaps):.3f}")
    # measured: 21 of 24 (all 24 with a scale per centroid row instead of one for all: the
    # int8 centroid scores' error, ~1e-3, reorders near-ties of the centroid-only ranking)
    assert identical >= 0.85 * len(results)
    assert np.mean(overlaps) >= 0.95
    assert max_diff <= SCORE_TOLERANCE


def test_default_settings_overlap_colbert_searcher(imported, golden):
    """Our defaults (PLAID or exhaustive, whichever is faster) vs the Searcher's defaults."""
    assert golden["default"]["settings"] == {
        "ncells": 1,
        "centroid_score_threshold": 0.5,
        "ndocs": 256,
    }
    for exact in (None, False):
        results = imported.search(golden["queries"], k=golden["k"], exact=exact)
        overlaps = [
            len({int(h.document_id) for h in hits} & set(ref["pids"])) / len(ref["pids"])
            for hits, ref in zip(results, golden["default"]["results"], strict=True)
        ]
        print(f"default settings (exact={exact}): overlap@10 {np.mean(overlaps):.3f}")
        assert np.mean(overlaps) >= 0.9  # measured: 1.0


# -- what the import writes --------------------------------------------------------------------


def test_import_copies_codes_and_codec(imported, golden):
    stats = imported.stats()
    assert stats["generation"] == 1
    assert stats["documents"] == stats["passages"] == golden["n_passages"]
    assert stats["centroids"] == golden["n_centroids"]
    assert stats["nbits"] == golden["index_settings"]["nbits"]
    snap = imported._snapshot()
    assert snap.manifest.codec == "codec-000001"
    assert (imported.path / "codec-000001" / "codec.json").is_file()
    load = lambda name: torch.load(FIXTURE / name, map_location="cpu", weights_only=True)  # noqa: E731
    assert snap.codec.centroids.dtype == np.float16  # as saved: exact, and half the memory
    np.testing.assert_array_equal(snap.codec.centroids, load("centroids.pt").numpy())
    cutoffs, weights = load("buckets.pt")
    np.testing.assert_array_equal(snap.codec.bucket_cutoffs, cutoffs.float().numpy())
    np.testing.assert_array_equal(snap.codec.bucket_weights, weights.float().numpy())
    [segment] = snap.segments
    np.testing.assert_array_equal(segment.codes, load("0.codes.pt").numpy())
    np.testing.assert_array_equal(segment.residuals, load("0.residuals.pt").numpy())
    doclens = json.loads((FIXTURE / "doclens.0.json").read_text())
    np.testing.assert_array_equal(segment.doclens, doclens)
    assert stats["token_vectors"] == sum(doclens)


def test_documents_come_from_the_collection(imported, golden):
    texts = tsv_texts()
    for pid in (0, 5, len(texts) - 1):
        document = imported.get(str(pid))
        assert document is not None and document.text == texts[pid]
        assert document.n_passages == 1
    hit = imported.search(golden["queries"][0], k=1, exact=True)[0]
    assert hit.passage_id == f"{hit.document_id}#0"
    assert hit.text == texts[int(hit.document_id)]
    assert (hit.start, hit.end) == (0, len(hit.text))


def test_model_named_in_metadata_is_used(plaid_copy, plaid_checkpoint, tmp_path, golden):
    edit_config(plaid_copy, checkpoint=str(plaid_checkpoint))
    index = import_plaid_index(plaid_copy, TSV, tmp_path / "index", device="cpu")
    assert index.model.name == str(plaid_checkpoint)
    pids, _ = ranked(index.search(golden["queries"][0], k=10, exact=True))
    assert pids == golden["exhaustive"]["results"][0]["pids"]


def test_imported_index_supports_add_delete_compact_reopen(plaid_model, tmp_path, golden):
    path = tmp_path / "index"
    index = import_plaid_index(FIXTURE, TSV, path, plaid_model)
    new = {
        "new-1": "富士山の山頂でご来光を見るには、夜のうちに登り始める必要があります。",
        "new-2": "味噌汁のだしは、昆布とかつお節でとるのが基本です。",
    }
    index.add(list(new.values()), ids=list(new))
    assert len(index) == golden["n_passages"] + 2
    assert index.search(new["new-1"], k=1, exact=True)[0].document_id == "new-1"
    assert index.search(new["new-2"], k=1)[0].document_id == "new-2"

    query = golden["queries"][0]
    top = [h.document_id for h in index.search(query, k=5, exact=True)]
    assert index.delete(top[:2]) == 2
    after = [h.document_id for h in index.search(query, k=5, exact=True)]
    assert not set(top[:2]) & set(after)
    assert after[:3] == top[2:]

    index.compact()
    reopened = Index.open(path)  # the model is found from the manifest
    assert len(reopened) == golden["n_passages"]
    assert [h.document_id for h in reopened.search(query, k=5, exact=True)] == after
    reference = golden["exhaustive_all"]["results"][0]
    reference_scores = dict(zip(reference["pids"], reference["scores"], strict=True))
    for hit in reopened.search(query, k=5):
        if hit.document_id.isdigit():  # an imported passage: its score is unchanged
            assert abs(hit.score - reference_scores[int(hit.document_id)]) <= SCORE_TOLERANCE
    assert reopened.stats()["segments"] == 1 and reopened.stats()["generation"] == 4


# -- other collection layouts ------------------------------------------------------------------


def test_ragatouille_layout(plaid_copy, plaid_model, imported, tmp_path, golden):
    """collection.json + pid_docid_map.json + docid_metadata_map.json, two passages per
    document: one document per RAGatouille document id."""
    texts = tsv_texts()
    (plaid_copy / "collection.json").write_text(json.dumps(texts, ensure_ascii=False))
    pid_docid = {str(pid): f"doc-{pid // 2}" for pid in range(len(texts))}
    (plaid_copy / "pid_docid_map.json").write_text(json.dumps(pid_docid))
    metadata = {f"doc-{k}": {"odd": k % 2} for k in range(len(texts) // 2)}
    (plaid_copy / "docid_metadata_map.json").write_text(json.dumps(metadata))

    index = import_plaid_index(plaid_copy, None, tmp_path / "index", plaid_model)
    assert len(index) == len(texts) // 2
    document = index.get("doc-1")
    assert document is not None and document.n_passages == 2
    assert document.text == texts[2] + "\n\n" + texts[3]
    assert document.metadata == {"odd": 1}

    query = golden["queries"][3]
    hits = index.search(query, k=10, exact=True)
    reference = imported.search(query, k=10, exact=True)
    assert [h.score for h in hits] == [h.score for h in reference]  # the same vectors
    for hit, ref in zip(hits, reference, strict=True):
        pid = int(ref.document_id)
        assert hit.document_id == f"doc-{pid // 2}"
        assert hit.passage_id == f"doc-{pid // 2}#{pid % 2}"
        assert hit.text == texts[pid]
        assert index.get(hit.document_id).text[hit.start : hit.end] == hit.text
    filtered = index.search(query, k=10, where={"odd": 1}, exact=True)
    assert filtered and all(h.metadata == {"odd": 1} for h in filtered)


def test_jsonl_and_list_collections(plaid_model, tmp_path, corpus):
    texts = tsv_texts()
    jsonl = tmp_path / "collection.jsonl"
    with open(jsonl, "w", encoding="utf-8") as handle:
        for doc, text in zip(corpus, texts, strict=True):
            row = {"id": doc["id"], "text": text, "metadata": doc["metadata"]}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    index = import_plaid_index(FIXTURE, jsonl, tmp_path / "a", plaid_model)
    assert index.get(corpus[0]["id"]).text == texts[0]
    assert index.get(corpus[0]["id"]).metadata == corpus[0]["metadata"]
    assert "0" not in index

    index = import_plaid_index(FIXTURE, texts, tmp_path / "b", plaid_model)
    assert index.get("0").text == texts[0]


def test_tsv_title_column_is_prepended_like_colbert_ai(plaid_model, tmp_path):
    texts = tsv_texts()
    tsv = tmp_path / "titled.tsv"
    tsv.write_text(
        "id\ttext\ttitle\n" + "".join(f"{pid}\t{t}\tT{pid}\n" for pid, t in enumerate(texts)),
        encoding="utf-8",
    )
    index = import_plaid_index(FIXTURE, tsv, tmp_path / "index", plaid_model)
    assert index.get("3").text == f"T3 | {texts[3]}"


# -- refusals and errors -----------------------------------------------------------------------


class _Payload:
    """Unpickling this would run code (here: set an environment variable)."""

    def __reduce__(self):
        return (exec, (f"import os; os.environ[{PWNED!r}] = '1'",))


class _Plain:
    def __init__(self):
        self.centroids = [1.0, 2.0]


@pytest.mark.parametrize("name", ["centroids.pt", "buckets.pt", "0.codes.pt", "0.residuals.pt"])
@pytest.mark.parametrize("payload", [_Payload, _Plain])
def test_pickled_objects_are_refused(plaid_copy, plaid_model, tmp_path, name, payload):
    torch.save(payload(), plaid_copy / name)
    os.environ.pop(PWNED, None)
    with pytest.raises(PlaidImportError, match=rf"refusing to read .*{name}.*weights_only=True"):
        import_plaid_index(plaid_copy, TSV, tmp_path / "index", plaid_model)
    assert PWNED not in os.environ, "the pickled object was executed"
    assert not (tmp_path / "index").exists()


def test_non_tensor_contents_are_refused(plaid_copy, plaid_model, tmp_path):
    torch.save({"cutoffs": torch.zeros(3)}, plaid_copy / "buckets.pt")
    with pytest.raises(PlaidImportError, match="buckets.pt holds dict, expected a tuple"):
        import_plaid_index(plaid_copy, TSV, tmp_path / "index", plaid_model)


@pytest.mark.parametrize(
    "name",
    [
        "centroids.pt",
        "buckets.pt",
        "avg_residual.pt",
        "0.codes.pt",
        "0.residuals.pt",
        "doclens.0.json",
    ],
)
def test_missing_files_are_named(plaid_copy, plaid_model, tmp_path, name):
    (plaid_copy / name).unlink()
    with pytest.raises(PlaidImportError, match=rf"{name}.* missing|missing.*{name}"):
        import_plaid_index(plaid_copy, TSV, tmp_path / "index", plaid_model)
    assert not (tmp_path / "index").exists()


def test_index_folder_errors(plaid_copy, plaid_model, tmp_path):
    with pytest.raises(PlaidImportError, match="not a directory"):
        import_plaid_index(tmp_path / "nowhere", TSV, tmp_path / "index", plaid_model)
    (plaid_copy / "metadata.json").unlink()
    import_plaid_index(plaid_copy, TSV, tmp_path / "from-plan", plaid_model)  # plan.json suffices
    (plaid_copy / "plan.json").unlink()
    with pytest.raises(PlaidImportError, match="neither metadata.json nor plan.json"):
        import_plaid_index(plaid_copy, TSV, tmp_path / "index", plaid_model)


def test_inconsistent_chunks_are_refused(plaid_copy, plaid_model, tmp_path):
    doclens = json.loads((plaid_copy / "doclens.0.json").read_text())
    (plaid_copy / "doclens.0.json").write_text(json.dumps(doclens[:-1]))
    with pytest.raises(PlaidImportError, match="chunk 0 .* is inconsistent"):
        import_plaid_index(plaid_copy, TSV, tmp_path / "index", plaid_model)


def test_collection_errors(plaid_model, tmp_path):
    lines = TSV.read_text(encoding="utf-8").splitlines()
    short = tmp_path / "short.tsv"
    short.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(PlaidImportError, match="47 passages but the index .* has 48"):
        import_plaid_index(FIXTURE, short, tmp_path / "index", plaid_model)
    bad = tmp_path / "bad.tsv"
    bad.write_text("0\tfirst\nx\tsecond\n", encoding="utf-8")
    with pytest.raises(PlaidImportError, match=r"bad.tsv:2: 'x' is not an integer passage id"):
        import_plaid_index(FIXTURE, bad, tmp_path / "index", plaid_model)
    with pytest.raises(PlaidImportError, match="no collection.json"):
        import_plaid_index(FIXTURE, None, tmp_path / "index", plaid_model)
    with pytest.raises(PlaidImportError, match="does not exist"):
        import_plaid_index(FIXTURE, tmp_path / "missing.tsv", tmp_path / "index", plaid_model)
    assert not (tmp_path / "index").exists()


def test_model_errors(plaid_copy, tmp_path, golden):
    with pytest.raises(PlaidImportError, match="could not load the checkpoint .* --model"):
        import_plaid_index(plaid_copy, TSV, tmp_path / "index")  # recorded path is gone
    other = make_tiny_checkpoint(tmp_path / "dim16", dim=16)
    with pytest.raises(PlaidImportError, match="has dim 16 but .* dim-32 vectors"):
        import_plaid_index(plaid_copy, TSV, tmp_path / "index", other)
    assert not (tmp_path / "index").exists()


def test_encoding_differences_warn(plaid_copy, plaid_model, tmp_path):
    edit_config(plaid_copy, query_maxlen=64)
    with pytest.warns(UserWarning, match="query_maxlen: index 64, model 32"):
        import_plaid_index(plaid_copy, TSV, tmp_path / "index", plaid_model)


# -- command line ------------------------------------------------------------------------------


def test_cli_import_plaid(plaid_checkpoint, tmp_path, capsys, golden):
    target = tmp_path / "index"
    argv = ["import-plaid", str(FIXTURE), str(TSV), "--index", str(target)]
    assert main([*argv, "--model", str(plaid_checkpoint)]) == 0
    assert "48 documents, 48 passages, 3739 vectors" in capsys.readouterr().out
    index = Index.open(target)
    pids, _ = ranked(index.search(golden["queries"][1], k=10, exact=True))
    assert pids == golden["exhaustive"]["results"][1]["pids"]

    assert main([*argv, "--model", str(plaid_checkpoint)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--model", str(plaid_checkpoint), "--overwrite"]) == 0
    assert main(argv) == 2  # the checkpoint recorded by the fixture no longer exists
    assert "--model" in capsys.readouterr().err
