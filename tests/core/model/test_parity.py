"""Encoding equals colbert-ai 0.2.22 given the same weights (golden fixture, DESIGN.md §3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jacolbert_core import ColBERT
from jacolbert_core.testing import make_tiny_checkpoint
from tests.fixtures.make_parity_golden import checkpoint_digest
from tests.fixtures.parity import CHECKPOINT_KWARGS, parity_documents, parity_queries

GOLDEN = Path(__file__).parents[2] / "fixtures" / "parity_golden.npz"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def parity_checkpoint(tmp_path_factory: pytest.TempPathFactory, golden) -> Path:
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("parity") / "ckpt", **CHECKPOINT_KWARGS)
    assert checkpoint_digest(path) == str(golden["checkpoint_sha256"]), (
        "the tiny checkpoint no longer matches the one the golden fixture was made from; "
        "re-run tests/fixtures/make_parity_golden.py"
    )
    return path


@pytest.mark.parametrize("setting", ["default", "attend"])
def test_tokenization_matches_reference(parity_checkpoint, golden, setting):
    model = ColBERT.from_pretrained(
        parity_checkpoint, device="cpu", attend_to_mask_tokens=setting == "attend"
    )
    queries = model.tokenizer.queries(parity_queries())
    np.testing.assert_array_equal(queries.input_ids.numpy(), golden[f"{setting}/query_ids"])
    np.testing.assert_array_equal(queries.attention_mask.numpy(), golden[f"{setting}/query_mask"])
    documents = model.tokenizer.document_ids(parity_documents())
    lengths = golden[f"{setting}/doc_token_lengths"]
    np.testing.assert_array_equal([len(d) for d in documents], lengths)
    np.testing.assert_array_equal(np.concatenate(documents), golden[f"{setting}/doc_ids"])


@pytest.mark.parametrize("setting", ["default", "attend"])
def test_vectors_and_scores_match_reference(parity_checkpoint, golden, setting):
    model = ColBERT.from_pretrained(
        parity_checkpoint, device="cpu", attend_to_mask_tokens=setting == "attend"
    )
    queries = model.encode_queries(parity_queries(), batch_size=7)
    documents = model.encode_documents(parity_documents(), batch_size=5)

    ref_queries = golden[f"{setting}/query_vectors"]
    assert np.abs(np.stack(queries) - ref_queries).max() <= 1e-5

    np.testing.assert_array_equal([len(d) for d in documents], golden[f"{setting}/doclens"])
    assert np.abs(np.concatenate(documents) - golden[f"{setting}/doc_vectors"]).max() <= 1e-5

    ours = np.stack([[float((q @ d.T).max(axis=1).sum()) for d in documents] for q in queries])
    np.testing.assert_allclose(ours, golden[f"{setting}/scores"], atol=1e-4, rtol=0)
    for i, query in enumerate(parity_queries()[:3]):
        np.testing.assert_allclose(
            model.score(query, parity_documents()), golden[f"{setting}/scores"][i], atol=1e-4
        )
