"""Late-interaction (MaxSim) scoring over token vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def maxsim(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """score(q, d) = sum over query vectors of the max dot product with d's vectors.

    ``query`` is [q, dim]; each document is [n_i, dim] with n_i >= 1.
    Returns float32 [len(documents)].
    """
    if not documents:
        return np.zeros(0, dtype=np.float32)
    lengths = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
    if (lengths == 0).any():
        raise ValueError("every document needs at least one token vector")
    flat = np.concatenate(documents, axis=0) if len(documents) > 1 else documents[0]
    similarities = query.astype(np.float32, copy=False) @ flat.astype(np.float32, copy=False).T
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.maximum.reduceat(similarities, starts, axis=1).sum(axis=0, dtype=np.float32)


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(index, score) of the k best scores, best first; ties broken by lower index."""
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [(int(i), float(scores[i])) for i in order]
