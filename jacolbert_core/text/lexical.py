"""Japanese BM25: MeCab terms (fugashi + unidic-lite) scored with bm25s.

Terms (:func:`japanese_terms`)
    1. NFKC normalisation (full-width letters and digits become ASCII, half-width katakana
       becomes full-width, ``㈱`` becomes ``(株)``...), so both spellings meet in one term;
    2. MeCab word segmentation with the unidic-lite dictionary, ``-Owakati`` output (surface
       forms only, one C call per text, no Python object per word);
    3. lower-casing (``iPhone`` and ``IPHONE`` are one term);
    4. dropping tokens made only of punctuation or symbol characters (Unicode categories
       ``P*`` and ``S*``: ``。``, ``、``, ``「``, ``・``, ``→``, ``★``...), which carry no
       topical signal. Particles (``の``, ``は``...) are kept: BM25's IDF already gives them
       almost no weight, and dropping them would need a stop-word list to maintain.

    Surface forms, not lemmas: the design (DESIGN.md §6) asks for surface forms, and lemmas
    were measured at ~1.8x the MeCab time (a full feature parse per word instead of
    ``-Owakati``). unidic lemmas also rewrite orthography in ways that are not always wanted
    for retrieval (``京都`` -> ``キョウト``, ``アプリ`` -> ``アプリ-application``,
    ``きれい`` -> ``奇麗``). The price: inflected forms do not meet (``迎え`` in ``迎えます``
    vs ``迎える``); queries written like the passages, the usual case, are unaffected.

Scoring
    :class:`BM25` wraps a ``bm25s.BM25`` (Lucene variant, ``k1=1.5``, ``b=0.75`` by default)::

        score(q, d) = sum over terms t of q of  idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl))
        idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))

    Scores of every (term, passage) pair are precomputed at build time in a sparse matrix; a
    query sums the rows of its terms (a term repeated in the query counts each time).
    Only passages sharing at least one term with the query (score > 0) are returned; ties are
    broken by corpus position, so results are deterministic.

Files
    :meth:`BM25.save` writes bm25s's own files (``*.csc.index.npy`` arrays saved with
    ``allow_pickle=False``, ``vocab.index.json``, ``params.index.json``) plus
    ``jacolbert_bm25.json`` (format version and the term settings). :meth:`BM25.load` reads
    the arrays with ``allow_pickle=False``: no pickles either way.
"""

from __future__ import annotations

import json
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jacolbert_core.errors import JAPANESE_TOKENIZER_HINT, MissingDependencyError

__all__ = ["BM25", "japanese_terms"]

FORMAT_VERSION = 1
CONFIG_FILE = "jacolbert_bm25.json"
TERMS = {
    "analyzer": "mecab-unidic-lite",
    "form": "surface",
    "normalization": "NFKC",
    "lowercase": True,
    "drop": "punctuation-or-symbol-only",
}
BM25S_HINT = "BM25 needs the bm25s package: pip install bm25s"
_TAGGERS = threading.local()  # MeCab taggers are not thread-safe: one per thread
_KEEP: dict[str, bool] = {}  # token -> has a character other than punctuation/symbols
_KEEP_LIMIT = 1 << 20


def japanese_terms(texts: Sequence[str]) -> list[list[str]]:
    """BM25 terms of each text: NFKC, MeCab surface forms, lower-cased, without
    punctuation/symbol-only tokens (see the module docstring)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings; wrap a single text in a list")
    parse = _tagger().parse
    normalize = unicodedata.normalize
    if len(_KEEP) > _KEEP_LIMIT:
        _KEEP.clear()
    known = _KEEP.get
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
        if "\x00" in text:
            text = text.replace("\x00", " ")  # MeCab stops reading at NUL
        tokens = parse(normalize("NFKC", text)).lower().split()
        # a token's verdict is cached: a dict lookup per token instead of a scan per character
        out.append([t for t in tokens if known(t) or (t not in _KEEP and _classify(t))])
    return out


def _classify(token: str) -> bool:
    """Whether ``token`` has a character that is neither punctuation nor a symbol."""
    keep = any(unicodedata.category(ch)[0] not in "PS" for ch in token)
    _KEEP[token] = keep
    return keep


class BM25:
    """A BM25 index over Japanese passages. Build with :meth:`build`, reopen with :meth:`load`.

    Passages are identified by their position in the ``texts`` given to :meth:`build`.
    """

    def __init__(self, retriever: Any, num_docs: int):
        """Use :meth:`build` or :meth:`load`."""
        self._bm25 = retriever
        self._num_docs = num_docs
        self._vocab: dict[str, int] = retriever.vocab_dict

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        show_progress: bool = False,
    ) -> BM25:
        """Index ``texts`` (passage i = ``texts[i]``)."""
        bm25s = _bm25s()
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty; pass at least one passage to index")
        if not (k1 >= 0 and 0 <= b <= 1):
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        from tqdm.auto import tqdm

        growing: defaultdict[str, int] = defaultdict()
        growing.default_factory = growing.__len__  # an unseen term gets the next id
        term_id = growing.__getitem__
        ids: list[list[int]] = []
        step = 2048
        with tqdm(
            total=len(texts), desc="BM25 terms", unit="doc", disable=not show_progress
        ) as bar:
            for start in range(0, len(texts), step):
                for terms in japanese_terms(texts[start : start + step]):
                    ids.append(list(map(term_id, terms)))
                bar.update(min(step, len(texts) - start))
        vocab = dict(growing)
        if not vocab:
            raise ValueError(
                "no indexable terms in texts (only whitespace, punctuation or symbols)"
            )
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index((ids, vocab), create_empty_token=False, show_progress=False)
        return cls(retriever, len(texts))

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = False) -> BM25:
        """Reopen an index written by :meth:`save` (``mmap`` maps the arrays read-only)."""
        bm25s = _bm25s()
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved jacolbert BM25 index ({CONFIG_FILE} is missing)"
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory}: BM25 format version {config.get('format_version')!r} is not "
                f"supported (this jacolbert reads version {FORMAT_VERSION})"
            )
        if config.get("terms") != TERMS:
            raise ValueError(
                f"{directory} was built with different term settings ({config.get('terms')}); "
                "rebuild it with this version of jacolbert"
            )
        retriever = bm25s.BM25.load(
            directory, mmap=mmap, allow_pickle=False, load_corpus=False, show_progress=False
        )
        return cls(retriever, int(config["num_docs"]))

    def save(self, directory: str | Path) -> Path:
        """Write the index into ``directory`` (created if needed); returns it."""
        directory = Path(directory)
        self._bm25.save(directory, allow_pickle=False, show_progress=False)
        config = {
            "format_version": FORMAT_VERSION,
            "num_docs": self._num_docs,
            "k1": self._bm25.k1,
            "b": self._bm25.b,
            "terms": TERMS,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        return directory

    # -- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._num_docs

    @property
    def k1(self) -> float:
        return float(self._bm25.k1)

    @property
    def b(self) -> float:
        return float(self._bm25.b)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for ``query`` (float32, one per passage, 0 = no term
        in common); for score fusion."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        return self._scores(japanese_terms([query])[0])

    def search(self, queries: str | Sequence[str], k: int = 10) -> list[list[tuple[int, float]]]:
        """For each query, up to ``k`` (passage position, score) pairs, best first.

        A single string is one query (the result is still a list of one ranking). Passages
        with no term in common with the query are never returned; equal scores are ordered by
        passage position.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if isinstance(queries, str):
            queries = [queries]
        return [_top_k(self._scores(terms), k) for terms in japanese_terms(list(queries))]

    def _scores(self, terms: list[str]) -> np.ndarray:
        ids = [self._vocab[t] for t in terms if t in self._vocab]
        if not ids:
            return np.zeros(self._num_docs, dtype=np.float32)
        return self._bm25.get_scores_from_ids(ids)

    def __repr__(self) -> str:
        return (
            f"BM25(passages={self._num_docs}, terms={len(self._vocab)}, k1={self.k1}, b={self.b})"
        )


def _top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Positive scores, best first, ties by position: deterministic whatever the partition."""
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        values = scores[candidates]
        kth = np.partition(values, len(values) - k)[len(values) - k]
        candidates = candidates[values >= kth]  # every candidate tied with the k-th is kept
    values = scores[candidates]
    order = np.lexsort((candidates, -values))[:k]
    return [(int(i), float(s)) for i, s in zip(candidates[order], values[order], strict=True)]


def _tagger():
    tagger = getattr(_TAGGERS, "tagger", None)
    if tagger is None:
        try:
            import fugashi
            import unidic_lite
        except ImportError as error:
            raise MissingDependencyError(JAPANESE_TOKENIZER_HINT) from error
        dicdir = unidic_lite.DICDIR
        tagger = fugashi.GenericTagger(f'-d "{dicdir}" -r "{dicdir}/mecabrc" -Owakati')
        _TAGGERS.tagger = tagger
    return tagger


def _bm25s():
    try:
        import bm25s
    except ImportError as error:
        raise MissingDependencyError(BM25S_HINT) from error
    return bm25s
