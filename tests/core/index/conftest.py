from __future__ import annotations

from pathlib import Path

import pytest

from jacolbert_core import ColBERT
from jacolbert_core.index.index import Index


@pytest.fixture
def make_index(tmp_path: Path, peaked_model: ColBERT, corpus):
    def build(n: int = 48, name: str = "idx", **kwargs) -> Index:
        index = Index.create(tmp_path / name, peaked_model, **kwargs)
        docs = corpus[:n]
        index.add(
            [d["text"] for d in docs],
            ids=[d["id"] for d in docs],
            metadatas=[d["metadata"] for d in docs],
        )
        return index

    return build
