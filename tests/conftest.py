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
