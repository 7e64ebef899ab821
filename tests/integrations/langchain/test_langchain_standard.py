"""LangChain's own standard retriever tests, run against the sample index opened from its path."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_jacolbert")
pytest.importorskip("langchain_tests")
pytest.importorskip("pytest_asyncio")

from langchain_jacolbert import JaColBERTRetriever  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402


# The standard suite has an ``async def`` test; without asyncio_mode=auto in the repo's pytest
# settings it needs the asyncio mark, which pytest-asyncio then reports on the sync tests.
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:The test <Function .*asyncio.* not an async function")
class TestJaColBERTRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _sample(self, sample_index, peaked_model) -> None:
        self._params = {"index": str(sample_index.path), "model": peaked_model}

    @property
    def retriever_constructor(self) -> type[JaColBERTRetriever]:
        return JaColBERTRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return self._params

    @property
    def retriever_query_example(self) -> str:
        return "京都の紅葉は何月ごろが見頃ですか？"
