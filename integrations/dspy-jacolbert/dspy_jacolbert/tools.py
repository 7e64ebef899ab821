"""A typed search function for ``dspy.ReAct(tools=[...])`` (DSPy reads its name, docstring and
type hints to describe the tool to the LM)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dspy_jacolbert.rm import JaColBERTRM
from jacolbert_core import Index

DEFAULT_DESCRIPTION = (
    "Search the Japanese document collection and return the {k} most relevant passages, best first."
)


def make_search_tool(
    index: Index | JaColBERTRM | str | Path,
    k: int = 3,
    *,
    name: str = "search",
    description: str | None = None,
    where: dict[str, Any] | None = None,
) -> Callable[[str], list[str]]:
    """A ``search(query: str) -> list[str]`` function over ``index`` for agents.

    ``index`` is an open :class:`~jacolbert_core.Index`, a :class:`JaColBERTRM` or an index
    directory. The function returns the texts of the top ``k`` passages (restricted by
    ``where`` if given). ``name`` and ``description`` become the tool's name and the first
    paragraph of its docstring, which DSPy shows the LM; describe the collection there
    (e.g. "社内規程を検索する" / "Search the company handbook").

    Example::

        agent = dspy.ReAct("question -> answer", tools=[make_search_tool(index, k=3)])
    """
    rm = index if isinstance(index, JaColBERTRM) else JaColBERTRM(index, k=k, where=where)
    if not name.isidentifier():
        raise ValueError(f"name must be a Python identifier (tool names are), got {name!r}")

    def search(query: str) -> list[str]:
        return [passage.long_text for passage in rm(query, k=k, where=where)]

    summary = (description or DEFAULT_DESCRIPTION.format(k=k)).strip()
    search.__doc__ = (
        f"{summary}\n\n"
        "Args:\n"
        "    query: what to look for, as a natural-language question or keywords "
        "(Japanese works best).\n\n"
        "Returns:\n"
        f"    Up to {k} passage texts, most relevant first.\n"
    )
    search.__name__ = search.__qualname__ = name
    return search
