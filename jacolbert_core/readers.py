"""Reading collections for the CLI: JSONL, CSV/TSV, or a folder of .txt/.md files."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jacolbert_core.datafiles import iter_jsonl
from jacolbert_core.errors import JaColBERTError

TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def read_records(path: str | Path) -> list[Record]:
    """Records from ``path``: JSONL (``id``, ``text``, optional ``metadata``), CSV/TSV with
    ``id`` and ``text`` columns (other columns become metadata), or a folder of text files
    (id = relative path)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise JaColBERTError(
            f"input {path} does not exist; pass a .jsonl, .csv, .tsv file or a folder"
        )
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        return _read_table(path, "\t" if suffix == ".tsv" else ",")
    raise JaColBERTError(
        f"unsupported input {path}: use .jsonl, .csv, .tsv or a folder of .txt/.md files"
    )


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    for number, row in iter_jsonl(path):
        if not isinstance(row.get("text"), str):
            raise JaColBERTError(f"{path}:{number}: each line needs a string field 'text'")
        records.append(
            Record(
                str(row.get("id", f"{path.stem}-{number}")), row["text"], row.get("metadata") or {}
            )
        )
    return records


def _read_table(path: Path, delimiter: str) -> list[Record]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise JaColBERTError(
                f"{path}: the header row needs a 'text' column (and optionally 'id')"
            )
        return [
            Record(
                row.get("id") or f"{path.stem}-{number}",
                row["text"],
                {k: v for k, v in row.items() if k not in ("id", "text")},
            )
            for number, row in enumerate(reader, start=1)
        ]


def _read_folder(path: Path) -> list[Record]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise JaColBERTError(f"{path} holds no .txt or .md files")
    return [
        Record(
            str(f.relative_to(path)),
            f.read_text(encoding="utf-8"),
            {"path": str(f.relative_to(path))},
        )
        for f in files
    ]
