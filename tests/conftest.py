"""Shared fixtures: tiny Japanese ColBERT checkpoints built offline, once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from jacolbert_core.testing import make_tiny_checkpoint, sample_corpus, sample_queries


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path):
    from jacolbert_core import ColBERT

    return ColBERT.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def corpus() -> list[dict]:
    return sample_corpus()


@pytest.fixture(scope="session")
def queries() -> list[dict]:
    return sample_queries()


@pytest.fixture(scope="session")
def peaked_model(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model whose scores behave like lexical matching (realistic score gaps)."""
    from jacolbert_core import ColBERT

    path = make_tiny_checkpoint(
        tmp_path_factory.mktemp("peaked") / "ckpt", residual_scale=0.05, seed=3
    )
    return ColBERT.from_pretrained(path, device="cpu")


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory, peaked_model, corpus):
    """The sample corpus indexed with ``peaked_model``. Shared: do not modify it in tests."""
    from jacolbert_core import Index

    index = Index.create(tmp_path_factory.mktemp("sample") / "index", peaked_model)
    index.add(
        [d["text"] for d in corpus],
        ids=[d["id"] for d in corpus],
        metadatas=[d["metadata"] for d in corpus],
    )
    return index
