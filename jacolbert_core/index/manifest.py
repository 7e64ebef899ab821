"""The index manifest: the single commit point of every write.

``manifest.json`` names the format, the model and its encoding settings, the codec, the
segments (with checksums) and the ``generation``. It is replaced atomically (write a temp
file, fsync, rename, fsync the directory), so a reader sees either the old or the new state.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jacolbert_core.errors import JaColBERTError
from jacolbert_core.index.segment import CorruptIndexError, fsync_directory

FORMAT = "jacolbert-index"
VERSION = 1
MANIFEST = "manifest.json"


class IndexNotFoundError(JaColBERTError, FileNotFoundError):
    """No index at the given path."""


@dataclass(frozen=True)
class SegmentEntry:
    name: str
    pid_base: int
    n_passages: int
    n_tokens: int
    files: dict[str, str]

    @property
    def pid_end(self) -> int:
        return self.pid_base + self.n_passages


@dataclass(frozen=True)
class Manifest:
    model: dict[str, Any]
    nbits: int
    chunking: dict[str, Any]
    keep_vectors: bool = False
    codec: str | None = None
    codec_vectors: int = 0  # token vectors the codec was trained on (to know when it is outgrown)
    segments: tuple[SegmentEntry, ...] = ()
    generation: int = 0
    next_pid: int = 0
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = [asdict(s) for s in self.segments]
        return {"format": FORMAT, "version": VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise CorruptIndexError(
                f"not a jacolbert index manifest (format={data.get('format')!r})"
            )
        if data.get("version") != VERSION:
            raise CorruptIndexError(
                f"index format version {data.get('version')} is not supported by this version "
                f"of jacolbert (expects {VERSION}); rebuild the index or upgrade jacolbert"
            )
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        fields["segments"] = tuple(SegmentEntry(**s) for s in fields.get("segments", []))
        return cls(**fields)


def read(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise IndexNotFoundError(
            f"no index at {directory} (missing {MANIFEST}); create one with Index.create(...) "
            "or `jacolbert index INPUT --index DIR`"
        )
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        raise CorruptIndexError(
            f"{path} is corrupted ({error}); restore it from a backup"
        ) from error


def write(directory: Path, manifest: Manifest) -> None:
    """Atomically replace the manifest."""
    temp = directory / f".{MANIFEST}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(manifest.to_json(), handle, ensure_ascii=False, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, directory / MANIFEST)
    fsync_directory(directory)


def stamp(directory: Path) -> int:
    """A cheap change marker for readers (mtime in ns of the manifest)."""
    try:
        return (directory / MANIFEST).stat().st_mtime_ns
    except FileNotFoundError:
        return -1
