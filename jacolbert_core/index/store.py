"""SQLite side of an index: documents, passages (text, offsets), metadata, tombstones.

Every row carries the manifest ``generation`` that wrote it. Readers see the rows of
generations up to the manifest's; rows of a newer generation belong to a write that has not
committed (or crashed) and are invisible, then removed by the next writer (``rollback``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jacolbert_core.index.filters import compile_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (doc_id, generation)
);
CREATE TABLE IF NOT EXISTS passages (
    pid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_by_doc ON passages (doc_id);
CREATE TABLE IF NOT EXISTS tombstones (
    pid INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class PassageRow:
    pid: int
    doc_id: str
    chunk: int
    start: int
    end: int
    text: str
    metadata: dict[str, Any]


class Store:
    """Thin typed wrapper around the index's SQLite database."""

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- reads at a snapshot generation -----------------------------------------------------

    _VISIBLE = (
        "p.generation <= :g AND p.pid NOT IN (SELECT pid FROM tombstones WHERE generation <= :g)"
    )

    def dead_pids(self, generation: int) -> np.ndarray:
        rows = self.db.execute("SELECT pid FROM tombstones WHERE generation <= ?", (generation,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def live_pids(self, doc_ids: Sequence[str], generation: int) -> list[int]:
        found: list[int] = []
        for batch in _batches(doc_ids):
            marks = ",".join("?" * len(batch))
            rows = self.db.execute(
                f"SELECT p.pid FROM passages p WHERE p.doc_id IN ({marks}) AND "
                + self._VISIBLE.replace(":g", "?"),
                [*batch, generation, generation],
            )
            found.extend(r[0] for r in rows)
        return found

    def filtered_pids(self, where: dict[str, Any], generation: int) -> np.ndarray:
        """Visible passages whose document metadata matches ``where``."""
        clause, params = compile_where(where)
        rows = self.db.execute(
            "SELECT p.pid FROM passages p JOIN documents d "
            "ON d.doc_id = p.doc_id AND d.generation = p.generation "
            f"WHERE p.generation <= ? AND {clause} "
            "AND p.pid NOT IN (SELECT pid FROM tombstones WHERE generation <= ?)",
            [generation, *params, generation],
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def passages(self, pids: Sequence[int]) -> dict[int, PassageRow]:
        out: dict[int, PassageRow] = {}
        for batch in _batches([int(pid) for pid in pids]):
            marks = ",".join("?" * len(batch))
            rows = self.db.execute(
                "SELECT p.pid, p.doc_id, p.chunk, p.start, p.end, p.text, d.metadata "
                "FROM passages p JOIN documents d "
                f"ON d.doc_id = p.doc_id AND d.generation = p.generation WHERE p.pid IN ({marks})",
                list(batch),
            )
            for pid, doc_id, chunk, start, end, text, metadata in rows:
                out[pid] = PassageRow(pid, doc_id, chunk, start, end, text, json.loads(metadata))
        return out

    def document(self, doc_id: str, generation: int) -> tuple[str, dict[str, Any], int] | None:
        """(text, metadata, passage count) of the live version of ``doc_id``."""
        row = self.db.execute(
            "SELECT d.text, d.metadata, count(p.pid) FROM passages p JOIN documents d "
            "ON d.doc_id = p.doc_id AND d.generation = p.generation "
            "WHERE p.doc_id = :d AND " + self._VISIBLE + " GROUP BY d.generation",
            {"d": doc_id, "g": generation},
        ).fetchone()
        return None if row is None else (row[0], json.loads(row[1]), row[2])

    def count_documents(self, generation: int) -> int:
        return self.db.execute(
            "SELECT count(DISTINCT p.doc_id) FROM passages p WHERE " + self._VISIBLE,
            {"g": generation},
        ).fetchone()[0]

    def live_rows(self, generation: int) -> Iterable[tuple[int, str, int, int, int, str, int]]:
        """(pid, doc_id, chunk, start, end, text, doc generation) of visible passages by pid."""
        return self.db.execute(
            "SELECT p.pid, p.doc_id, p.chunk, p.start, p.end, p.text, p.generation "
            "FROM passages p WHERE " + self._VISIBLE + " ORDER BY p.pid",
            {"g": generation},
        )

    # -- writes (the caller holds the index's writer lock) -------------------------------------

    def write(
        self,
        generation: int,
        documents: Sequence[tuple[str, str, str]] = (),
        passages: Sequence[tuple[int, str, int, int, int, str]] = (),
        tombstones: Sequence[int] = (),
        passage_generation: Sequence[int] | None = None,
    ) -> None:
        """One transaction: (doc_id, text, metadata json) documents, (pid, doc_id, chunk,
        start, end, text) passages and tombstoned pids, all tagged ``generation``."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                [(doc_id, generation, text, meta) for doc_id, text, meta in documents],
            )
            self.db.executemany(
                "INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(pid, doc, generation, c, s, e, t) for pid, doc, c, s, e, t in passages],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO tombstones VALUES (?, ?)",
                [(int(pid), generation) for pid in tombstones],
            )

    def copy_rows(
        self,
        rows: Sequence[tuple[int, str, int, int, int, str, int]],
        pid_base: int,
        generation: int,
    ) -> None:
        """Compaction: re-insert live passages (from :meth:`live_rows`) as pids
        ``pid_base, pid_base + 1, ...`` and their documents, tagged ``generation``."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            pairs = sorted({(doc_id, doc_gen) for _, doc_id, _, _, _, _, doc_gen in rows})
            self.db.executemany(
                "INSERT OR REPLACE INTO documents SELECT doc_id, ?, text, metadata FROM documents "
                "WHERE doc_id = ? AND generation = ?",
                [(generation, doc_id, doc_gen) for doc_id, doc_gen in pairs],
            )
            self.db.executemany(
                "INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (pid_base + i, doc_id, generation, chunk, start, end, text)
                    for i, (_, doc_id, chunk, start, end, text, _) in enumerate(rows)
                ],
            )

    def rollback(self, generation: int, live_ranges: Sequence[tuple[int, int]]) -> None:
        """Drop rows of uncommitted generations and rows of segments no longer listed."""
        in_ranges = " OR ".join(f"(pid >= {a} AND pid < {b})" for a, b in live_ranges) or "0"
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for table in ("passages", "tombstones", "documents"):
                self.db.execute(f"DELETE FROM {table} WHERE generation > ?", (generation,))
            self.db.execute(f"DELETE FROM passages WHERE NOT ({in_ranges})")
            self.db.execute(f"DELETE FROM tombstones WHERE NOT ({in_ranges})")
            self.db.execute(
                "DELETE FROM documents WHERE NOT EXISTS (SELECT 1 FROM passages p WHERE "
                "p.doc_id = documents.doc_id AND p.generation = documents.generation)"
            )


def _batches(items: Sequence[Any], size: int = 900) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
