"""Reading and writing the data files of training and evaluation.

* JSON Lines: :func:`iter_jsonl` (numbered rows, a clear error naming the bad line) and
  :func:`write_jsonl`.
* Text maps ``{id: text}`` (:func:`read_texts`) from JSONL (an id field such as ``id``/``_id``/
  ``pid``/``qid`` and a text field such as ``text``/``query``/``passage``; BEIR's ``title``
  prepended on request), a TSV ``id<TAB>text`` (MS MARCO / colbert-ai, header optional) or a
  BEIR folder (its ``corpus.jsonl`` or ``queries.jsonl``).
* Relevance judgements ``{qid: {pid: grade}}`` (:func:`read_qrels`) from BEIR TSV
  ``query-id corpus-id score``, TREC ``qid iteration pid relevance``, two-column ``qid pid``
  (grade 1), or JSONL rows holding a query id and a list of positives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jacolbert_core.errors import JaColBERTError

__all__ = [
    "ID_KEYS",
    "TEXT_KEYS",
    "iter_jsonl",
    "read_positives",
    "read_qrels",
    "read_texts",
    "write_jsonl",
]

ID_KEYS = (
    "id", "_id", "pid", "qid", "doc_id", "docid", "query_id", "q_id", "query-id", "corpus-id",
)  # fmt: skip
TEXT_KEYS = ("text", "query", "question", "passage", "content", "contents")
POSITIVE_KEYS = ("positives", "relevant", "pos", "positive_ids")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def iter_jsonl(path: str | Path, *, objects: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-empty line; with ``objects`` every value must be a
    JSON object."""
    path = existing_file(path)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise JaColBERTError(f"{path}:{number}: not valid JSON ({error})") from error
            if objects and not isinstance(row, dict):
                raise JaColBERTError(f"{path}:{number}: each line must be a JSON object")
            yield number, row


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write one JSON value per line (UTF-8, Japanese kept readable); returns the count."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise JaColBERTError(f"{path} does not exist or is not a file")
    return path


def read_texts(path: str | Path, *, title: bool = False, kind: str = "corpus") -> dict[str, str]:
    """``{id: text}`` from JSONL, a TSV ``id<TAB>text`` or a BEIR folder (see the module doc).

    ``kind`` picks the BEIR folder's file (``"corpus"`` or ``"queries"``); ``title=True``
    prepends a non-empty ``title`` field (JSONL) or third column (TSV) as ``title + " " + text``.
    A repeated id is an error.
    """
    path = Path(path)
    if path.is_dir():
        name = "queries.jsonl" if kind == "queries" else "corpus.jsonl"
        path = path / name
        if not path.is_file():
            raise JaColBERTError(f"{path.parent} is a folder without {name}")
    path = existing_file(path)
    out: dict[str, str] = {}
    for where, key, text, heading in _text_rows(path):
        if key in out:
            raise JaColBERTError(f"{where}: duplicate id {key!r}")
        out[key] = f"{heading} {text}" if title and heading else text
    return out


def _text_rows(path: Path) -> Iterator[tuple[str, str, str, str]]:
    """(where, id, text, title or '') for each row of a JSONL or TSV text file."""
    if path.suffix.lower() in _JSONL_SUFFIXES:
        for number, row in iter_jsonl(path):
            key = next((k for k in ID_KEYS if k in row), None)
            value = next((k for k in TEXT_KEYS if isinstance(row.get(k), str)), None)
            if key is None or value is None:
                raise JaColBERTError(
                    f"{path}:{number}: need an id field ({', '.join(ID_KEYS[:4])}) and a text "
                    f"field ({', '.join(TEXT_KEYS[:4])})"
                )
            heading = row.get("title")
            heading = heading.strip() if isinstance(heading, str) else ""
            yield f"{path}:{number}", str(row[key]), row[value], heading
        return
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            cells = line.rstrip("\r\n").split("\t")
            if not any(c.strip() for c in cells):
                continue
            if number == 1 and cells[0].strip().lower() in ID_KEYS:
                continue  # header row
            if len(cells) < 2:
                raise JaColBERTError(f"{path}:{number}: expected 'id<TAB>text'")
            heading = cells[2].strip() if len(cells) > 2 else ""
            yield f"{path}:{number}", cells[0].strip(), cells[1], heading


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """``{qid: {pid: grade}}`` from a qrels file in any layout of the module docstring
    (grades kept as written, 0 included)."""
    path = existing_file(path)
    qrels: dict[str, dict[str, int]] = {}
    if path.suffix.lower() in _JSONL_SUFFIXES:
        for number, row in iter_jsonl(path):
            key = next((k for k in ID_KEYS if k in row), None)
            value = next((k for k in POSITIVE_KEYS if isinstance(row.get(k), list)), None)
            if key is None or value is None:
                raise JaColBERTError(
                    f"{path}:{number}: need a query id and a list of positive ids "
                    f"({', '.join(POSITIVE_KEYS)})"
                )
            qrels.setdefault(str(row[key]), {}).update((str(p), 1) for p in row[value])
    else:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                cells = [c.strip() for c in (line.split("\t") if "\t" in line else line.split())]
                if not cells or not cells[0]:
                    continue
                if number == 1 and cells[0].lower() in ID_KEYS:
                    continue  # header row
                if len(cells) == 4:  # TREC: qid iteration pid relevance
                    cells = [cells[0], cells[2], cells[3]]
                elif len(cells) == 2:
                    cells.append("1")
                if len(cells) != 3:
                    raise JaColBERTError(
                        f"{path}:{number}: expected 'qid pid', 'qid pid score' or "
                        f"'qid iteration pid relevance', got {len(cells)} columns"
                    )
                try:
                    grade = int(float(cells[2]))
                except ValueError:
                    raise JaColBERTError(
                        f"{path}:{number}: relevance {cells[2]!r} is not a number"
                    ) from None
                qrels.setdefault(cells[0], {})[cells[1]] = grade
    if not qrels:
        raise JaColBERTError(f"{path} holds no judgements")
    return qrels


def read_positives(path: str | Path) -> dict[str, list[str]]:
    """``{qid: [pid, ...]}``: the judgements of :func:`read_qrels` with a grade above 0, in
    file order; queries without any are left out."""
    positives = {
        qid: [pid for pid, grade in grades.items() if grade > 0]
        for qid, grades in read_qrels(path).items()
    }
    return {qid: pids for qid, pids in positives.items() if pids}
