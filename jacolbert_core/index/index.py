"""``Index``: an embedded, on-disk multi-vector index (segments + SQLite + manifest).

Writes (add, delete, compact) hold a file lock, write immutable files and SQLite rows tagged
with the next generation, then commit by atomically replacing the manifest. Readers keep a
snapshot of one generation and refresh it when the manifest changes.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from jacolbert_core.errors import JaColBERTError, require_text_list
from jacolbert_core.index import manifest as manifests
from jacolbert_core.index.codec import ResidualCodec, default_num_centroids
from jacolbert_core.index.lock import writer_lock
from jacolbert_core.index.manifest import Manifest, SegmentEntry
from jacolbert_core.index.segment import Segment, code_dtype
from jacolbert_core.index.store import PassageRow, Store
from jacolbert_core.model.colbert import ColBERT
from jacolbert_core.search.plaid import (
    SearchParams,
    choose_exhaustive,
    exhaustive_search,
    probe,
    search_segment,
)
from jacolbert_core.text.chunking import ChunkingConfig, chunk_text

STORE_FILE = "store.sqlite3"
SEGMENTS_DIR = "segments"
COMPRESS_CHUNK = 1 << 16
# Codec training (``Index._train_codec``): spherical faiss k-means with the design's centroid
# count on ``min(n, KMEANS_POINTS_PER_CENTROID * centroids)`` sampled vectors, KMEANS_ITERS
# iterations (colbert-ai runs 4 on up to 256 points per centroid). Each iteration costs one
# sample x centroids GEMM. Measured on the 5000-passage bench (700k vectors, 8192 centroids,
# nbits=2, 3 bucket rounds, 400 queries, agreement@10 of default search with exact MaxSim,
# three codec seeds): the sample size matters more than the iterations, above all for peaked
# scores, whose frequent tokens a small sample splits badly (peaked checkpoint: 8 x 4 ->
# 0.898-0.945 by seed, 16 x 4 -> 0.912-0.944, 32 x 4 -> 0.943-0.948, 32 x 2 -> 0.940-0.946;
# colbert-ai's own index 0.937; random checkpoint 32 x 2: 0.407, colbert-ai 0.351). 32 x 2
# costs what 16 x 4 does (~10 s of k-means here, +6 s over 8 x 4). The sample is also the
# memory bound of training (262144 x 128 float32 = 128 MiB).
KMEANS_POINTS_PER_CENTROID = 32
KMEANS_ITERS = 2
RETRAIN_GROWTH = 4  # retrain the codec once the collection is this many times its training set
RETRAIN_BELOW = 1 << 18  # ...unless the codec was trained on at least this many vectors


@dataclass(frozen=True)
class Hit:
    """One search result: a passage of a document, with its score and rank (1-based)."""

    passage_id: str
    document_id: str
    text: str
    score: float
    rank: int
    metadata: dict[str, Any]
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any]
    n_passages: int


@dataclass(frozen=True)
class _Snapshot:
    stamp: tuple[int, int]
    manifest: Manifest
    codec: ResidualCodec | None
    segments: tuple[Segment, ...]
    alive: tuple[np.ndarray, ...]


class Index:
    """A JaColBERT index in a directory. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path, model: ColBERT):
        self.path = path
        self.model = model
        self._store = Store(path / STORE_FILE)
        self._snap: _Snapshot | None = None
        self._refresh()

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        model: ColBERT,
        *,
        nbits: int = 2,
        chunking: ChunkingConfig | None = None,
        keep_vectors: bool = False,
        overwrite: bool = False,
    ) -> Index:
        """Create an empty index. ``chunking`` defaults to passages of ``doc_maxlen - 3``
        model tokens; ``ChunkingConfig(enabled=False)`` indexes each text whole (truncated
        at ``doc_maxlen`` by the encoder). ``keep_vectors`` also stores float16 vectors for
        exact final scores (about 8x larger at 2 bits)."""
        if nbits not in (1, 2, 4):
            raise ValueError(f"nbits must be 1, 2 or 4, got {nbits!r}")
        if not isinstance(model, ColBERT):
            raise TypeError(
                "model must be a ColBERT (ColBERT.from_pretrained(...)), "
                f"got {type(model).__name__}"
            )
        path = Path(path)
        if (path / manifests.MANIFEST).exists():
            if not overwrite:
                raise JaColBERTError(
                    f"an index already exists at {path}; open it with Index.open(path) "
                    "or pass overwrite=True"
                )
            shutil.rmtree(path)
        elif path.exists() and any(path.iterdir()):
            raise JaColBERTError(
                f"{path} exists and is not an empty directory; choose another path"
            )
        if chunking is None:
            max_tokens = max(8, model.config.doc_maxlen - 3)
            chunking = ChunkingConfig(
                max_tokens=max_tokens, overlap_tokens=min(32, max_tokens // 4)
            )
        path.mkdir(parents=True, exist_ok=True)
        (path / SEGMENTS_DIR).mkdir()
        Store(path / STORE_FILE).close()
        manifest = Manifest(
            model=_model_identity(model),
            nbits=nbits,
            chunking={
                "max_tokens": chunking.max_tokens,
                "overlap_tokens": chunking.overlap_tokens,
                "enabled": chunking.enabled,
            },
            keep_vectors=keep_vectors,
        )
        manifests.write(path, manifest)
        return cls(path, model)

    @classmethod
    def open(
        cls,
        path: str | Path,
        model: ColBERT | str | Path | None = None,
        *,
        force: bool = False,
        device: str | None = None,
    ) -> Index:
        """Open an index. Without ``model`` the manifest's model is loaded with the recorded
        encoding settings; a different model is refused unless ``force=True``."""
        path = Path(path)
        manifest = manifests.read(path)
        encoding = manifest.model["encoding"]
        if model is None or isinstance(model, (str, Path)):
            model = ColBERT.from_pretrained(
                model or manifest.model["name"], device=device, **encoding
            )
        identity = _model_identity(model)
        if not force:
            for key in ("fingerprint", "encoding"):
                if identity[key] != manifest.model[key]:
                    raise JaColBERTError(
                        f"the model does not match the one that built {path} ({key} differs: "
                        f"index has {manifest.model[key]!r}, model has {identity[key]!r}); "
                        "pass the original model, or force=True if you know they are compatible"
                    )
        return cls(path, model)

    # -- writes -------------------------------------------------------------------------------

    def add(
        self,
        texts: str | Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        batch_size: int = 32,
        show_progress: bool = False,
        lock_timeout: float = 0.0,
    ) -> list[str]:
        """Add or replace (upsert by id) documents; long ones are chunked into passages.

        Returns the document ids (generated ones are UUID hex strings)."""
        texts = require_text_list(texts, "texts")
        ids = _check_ids(ids, len(texts))
        metadata_json = _check_metadatas(metadatas, len(texts))
        chunks = self._chunk(texts)
        with writer_lock(self.path, lock_timeout):
            manifest = self._recover()
            generation = manifest.generation + 1
            name = f"seg-{generation:06d}-{uuid.uuid4().hex[:6]}"
            work = self.path / SEGMENTS_DIR / f".tmp-{name}"
            work.mkdir()
            try:
                passage_texts = [text for doc_chunks in chunks for (_, _, text) in doc_chunks]
                owners = [
                    (d, c) for d, doc_chunks in enumerate(chunks) for c in range(len(doc_chunks))
                ]
                order, doclens, vectors = self._encode_to_disk(
                    passage_texts, work, batch_size, show_progress
                )
                snap = self._snapshot()
                codec_name, codec, codec_vectors = (
                    manifest.codec,
                    snap.codec,
                    manifest.codec_vectors,
                )
                carried: list[tuple] = []
                if codec is not None and _outgrown(manifest, len(vectors)):
                    # the codec was fitted on a much smaller collection: refit it on everything,
                    # re-encoding the live passages from their stored (or decompressed) vectors
                    upserted = set(ids)
                    carried = [
                        r
                        for r in self._store.live_rows(manifest.generation)
                        if r[1] not in upserted
                    ]
                    doclens, vectors = self._spill_existing(snap, carried, work, doclens)
                    codec = None
                if codec is None:
                    codec, codec_name = self._train_codec(vectors, manifest.nbits, generation)
                    codec_vectors = len(vectors)
                entry = self._write_segment(
                    name, manifest.next_pid, codec, vectors, doclens, manifest.keep_vectors
                )
            finally:
                shutil.rmtree(work, ignore_errors=True)
            rows = []
            for j, position in enumerate(order):
                d, c = owners[position]
                start, end, text = chunks[d][c]
                rows.append((entry.pid_base + j, ids[d], c, start, end, text))
            replaced = self._store.live_pids(ids, manifest.generation)
            self._store.write(
                generation,
                documents=list(zip(ids, texts, metadata_json, strict=True)),
                passages=rows,
                tombstones=replaced,
            )
            if codec_name != manifest.codec:
                self._store.copy_rows(carried, entry.pid_base + len(order), generation)
            committed = replace(
                manifest,
                codec=codec_name,
                codec_vectors=codec_vectors,
                segments=(entry,) if codec_name != manifest.codec else (*manifest.segments, entry),
                generation=generation,
                next_pid=entry.pid_end,
                updated=time.time(),
            )
            manifests.write(self.path, committed)
            self._collect_garbage(committed)
        self._refresh()
        return ids

    def delete(self, ids: str | Sequence[str], *, lock_timeout: float = 0.0) -> int:
        """Delete documents by id; returns how many were found (unknown ids are ignored)."""
        ids = _check_ids([ids] if isinstance(ids, str) else ids, None)
        with writer_lock(self.path, lock_timeout):
            manifest = self._recover()
            pids = self._store.live_pids(ids, manifest.generation)
            if not pids:
                return 0
            found = {row.doc_id for row in self._store.passages(pids).values()}
            generation = manifest.generation + 1
            self._store.write(generation, tombstones=pids)
            manifests.write(
                self.path, replace(manifest, generation=generation, updated=time.time())
            )
        self._refresh()
        return len(found)

    def compact(self, *, lock_timeout: float = 0.0) -> None:
        """Merge all segments into one, dropping deleted passages and their files."""
        with writer_lock(self.path, lock_timeout):
            manifest = self._recover()
            snap = self._snapshot()
            if snap.codec is None:
                return
            generation = manifest.generation + 1
            rows = list(self._store.live_rows(manifest.generation))
            keep = np.array([row[0] for row in rows], dtype=np.int64)
            codes, residuals, vectors, doclens = _gather(snap.segments, keep)
            name = f"seg-{generation:06d}-{uuid.uuid4().hex[:6]}"
            entries: tuple[SegmentEntry, ...] = ()
            if len(keep):
                files = Segment.write(
                    self.path / SEGMENTS_DIR / name,
                    codes,
                    residuals,
                    doclens,
                    snap.codec.num_centroids,
                    vectors,
                )
                entries = (
                    SegmentEntry(name, manifest.next_pid, len(keep), int(doclens.sum()), files),
                )
            self._store.copy_rows(rows, manifest.next_pid, generation)
            committed = replace(
                manifest,
                segments=entries,
                generation=generation,
                next_pid=manifest.next_pid + len(keep),
                updated=time.time(),
            )
            manifests.write(self.path, committed)
            self._collect_garbage(committed)
        self._refresh()

    # -- reads --------------------------------------------------------------------------------

    def search(
        self,
        query: str | Sequence[str],
        k: int = 10,
        where: dict[str, Any] | None = None,
        *,
        ncells: int | None = None,
        centroid_score_threshold: float | None = None,
        ndocs: int | None = None,
        exact: bool | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Top-``k`` passages for a query (``list[Hit]``) or for each of a list of queries.

        ``where`` filters on document metadata before scoring. PLAID settings default by
        ``k`` (see :class:`SearchParams`) and can be overridden per call; ``exact=True``
        scores every allowed passage, ``None`` picks whichever is faster."""
        single = isinstance(query, str)
        queries = require_text_list(query, "query")
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        params = SearchParams.for_k(k)
        params = replace(
            params,
            **{
                name: value
                for name, value in (
                    ("ncells", ncells),
                    ("centroid_score_threshold", centroid_score_threshold),
                    ("ndocs", ndocs),
                )
                if value is not None
            },
        )
        for _ in range(2):  # a concurrent compaction may remove rows of our snapshot: retry once
            snap = self._snapshot()
            ranked = self._rank(snap, queries, k, where, params, exact)
            rows = self._store.passages([int(pid) for pids, _ in ranked for pid in pids])
            if all(int(pid) in rows for pids, _ in ranked for pid in pids):
                break
            self._refresh()
        hits = [_hits(pids, scores, rows) for pids, scores in ranked]
        return hits[0] if single else hits

    def get(self, id: str) -> Document | None:
        """The stored document with this id, or None."""
        found = self._store.document(id, self._snapshot().manifest.generation)
        return None if found is None else Document(id, found[0], found[1], found[2])

    def __len__(self) -> int:
        return self._store.count_documents(self._snapshot().manifest.generation)

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self.get(id) is not None

    def stats(self) -> dict[str, Any]:
        """Sizes and settings, for humans and monitoring."""
        snap = self._snapshot()
        manifest = snap.manifest
        n_tokens = sum(s.n_tokens for s in manifest.segments)
        live = sum(int(a.sum()) for a in snap.alive)
        disk = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        segment_bytes = sum(
            (self.path / SEGMENTS_DIR / s.name / f).stat().st_size
            for s in manifest.segments
            for f in s.files
            if f != "vectors.npy"
        )
        return {
            "path": str(self.path),
            "model": manifest.model["name"],
            "documents": len(self),
            "passages": live,
            "deleted_passages": sum(s.n_passages for s in manifest.segments) - live,
            "token_vectors": n_tokens,
            "segments": len(manifest.segments),
            "nbits": manifest.nbits,
            "centroids": snap.codec.num_centroids if snap.codec else 0,
            "dim": manifest.model["encoding"]["dim"],
            "keep_vectors": manifest.keep_vectors,
            "bytes_on_disk": disk,
            "bytes_per_vector": round(segment_bytes / n_tokens, 2) if n_tokens else 0.0,
            "generation": manifest.generation,
        }

    # -- internals ----------------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        stamp = manifests.stamp(self.path)
        if self._snap is None or self._snap.stamp != stamp:
            self._refresh()
        assert self._snap is not None
        return self._snap

    def _refresh(self) -> None:
        stamp = manifests.stamp(self.path)
        manifest = manifests.read(self.path)
        codec = ResidualCodec.load(self.path / manifest.codec) if manifest.codec else None
        segments = tuple(
            Segment.load(self.path / SEGMENTS_DIR / e.name, e.name, e.pid_base, e.files)
            for e in manifest.segments
        )
        dead = self._store.dead_pids(manifest.generation)
        alive = tuple(
            ~np.isin(np.arange(s.pid_base, s.pid_base + s.n_passages), dead) for s in segments
        )
        self._snap = _Snapshot(stamp, manifest, codec, segments, alive)

    def _recover(self) -> Manifest:
        """Under the writer lock: undo what an interrupted write left behind."""
        manifest = manifests.read(self.path)
        self._store.rollback(
            manifest.generation, [(s.pid_base, s.pid_end) for s in manifest.segments]
        )
        self._collect_garbage(manifest)
        self._refresh()
        return manifest

    def _collect_garbage(self, manifest: Manifest) -> None:
        listed = {s.name for s in manifest.segments}
        for child in (self.path / SEGMENTS_DIR).iterdir():
            if child.name not in listed:
                shutil.rmtree(child, ignore_errors=True)
        for child in self.path.glob("codec-*"):
            if child.name != manifest.codec:
                shutil.rmtree(child, ignore_errors=True)
        self._store.rollback(
            manifest.generation, [(s.pid_base, s.pid_end) for s in manifest.segments]
        )

    def _chunk(self, texts: list[str]) -> list[list[tuple[int, int, str]]]:
        config = ChunkingConfig(**self._snapshot().manifest.chunking)
        count = self.model.tokenizer.count_tokens
        return [
            [(c.start, c.end, c.text) for c in chunk_text(text, count, config)] for text in texts
        ]

    def _encode_to_disk(
        self, texts: list[str], work: Path, batch_size: int, show_progress: bool
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Encode once, streaming float16 vectors to a spill file in encoding order."""
        order: list[int] = []
        doclens: list[int] = []
        spill = work / "vectors.f16"
        with open(spill, "wb") as handle:
            for indices, arrays in self.model.iter_encode_documents(
                texts, batch_size, show_progress
            ):
                for i, array in zip(indices, arrays, strict=True):
                    handle.write(array.astype(np.float16).tobytes())
                    order.append(i)
                    doclens.append(len(array))
        n_tokens = int(sum(doclens))
        vectors = np.memmap(
            spill, dtype=np.float16, mode="r", shape=(n_tokens, self.model.config.dim)
        )
        return order, np.asarray(doclens, dtype=np.int32), vectors

    def _spill_existing(
        self, snap: _Snapshot, rows: list[tuple], work: Path, doclens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Append the vectors of live passages ``rows`` (pid order) to the spill file."""
        pids = np.array([row[0] for row in rows], dtype=np.int64)
        spill = work / "vectors.f16"
        lengths = [doclens]
        with open(spill, "ab") as handle:
            for segment in snap.segments:
                inside = (pids >= segment.pid_base) & (pids < segment.pid_base + segment.n_passages)
                local = pids[inside] - segment.pid_base
                token_ids = token_rows(segment.offsets, local)
                for start in range(0, len(token_ids), COMPRESS_CHUNK):
                    block = token_ids[start : start + COMPRESS_CHUNK]
                    if segment.vectors is not None:
                        vectors = np.asarray(segment.vectors[block])
                    else:
                        assert snap.codec is not None
                        vectors = snap.codec.decompress(
                            segment.codes[block], segment.residuals[block]
                        )
                    handle.write(vectors.astype(np.float16).tobytes())
                lengths.append(np.asarray(segment.doclens[local], dtype=np.int32))
        doclens = np.concatenate(lengths)
        shape = (int(doclens.sum()), self.model.config.dim)
        return doclens, np.memmap(spill, dtype=np.float16, mode="r", shape=shape)

    def _train_codec(
        self, vectors: np.ndarray, nbits: int, generation: int
    ) -> tuple[ResidualCodec, str]:
        """Fit the codec on a seeded sample of ``vectors`` (the float16 spill) and save it.

        Only the sample is read into memory (float32, at most ``KMEANS_POINTS_PER_CENTROID``
        rows per centroid: 128 MiB for 8192 centroids of dim 128), never the collection."""
        n_centroids = default_num_centroids(len(vectors))
        sample = kmeans_sample(len(vectors), n_centroids, generation)
        rows = np.empty((len(sample), vectors.shape[1]), dtype=np.float32)
        # the sample is spread over the whole spill: read it window by window of the spill
        # (COMPRESS_CHUNK rows, 16 MiB at dim 128) and drop each window's pages after it, so
        # at most one window is resident (reading 64k sampled rows at once paged in the whole
        # spill: +221 MB at 700k vectors, against +50 MB now, the sample itself included)
        windows = np.arange(0, len(vectors) + COMPRESS_CHUNK, COMPRESS_CHUNK)
        bounds = np.searchsorted(sample, windows)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi > lo:
                rows[lo:hi] = vectors[sample[lo:hi]]
                release_pages(vectors)
        codec = ResidualCodec.train(
            rows,
            nbits,
            n_centroids,
            kmeans_iters=KMEANS_ITERS,
            overwrite=True,
        )
        name = f"codec-{generation:06d}"
        codec.save(self.path / name)
        return codec, name

    def _write_segment(
        self,
        name: str,
        pid_base: int,
        codec: ResidualCodec,
        vectors: np.ndarray,
        doclens: np.ndarray,
        keep_vectors: bool,
    ) -> SegmentEntry:
        codes = np.empty(len(vectors), dtype=code_dtype(codec.num_centroids))
        residuals = np.empty((len(vectors), codec.bytes_per_vector), dtype=np.uint8)
        for start in range(0, len(vectors), COMPRESS_CHUNK):
            block = np.asarray(vectors[start : start + COMPRESS_CHUNK], dtype=np.float32)
            codes[start : start + len(block)], residuals[start : start + len(block)] = (
                codec.compress(block)
            )
            release_pages(vectors)  # read once: keep the spill's pages out of the RSS
        files = Segment.write(
            self.path / SEGMENTS_DIR / name,
            codes,
            residuals,
            doclens,
            codec.num_centroids,
            vectors if keep_vectors else None,
        )
        return SegmentEntry(name, pid_base, len(doclens), len(vectors), files)

    def _rank(
        self,
        snap: _Snapshot,
        queries: list[str],
        k: int,
        where: dict[str, Any] | None,
        params: SearchParams,
        exact: bool | None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if snap.codec is None or not snap.segments:
            if where is not None:
                self._store.filtered_pids(where, snap.manifest.generation)  # validate the filter
            return [empty for _ in queries]
        masks = list(snap.alive)
        if where is not None:
            allowed = self._store.filtered_pids(where, snap.manifest.generation)
            masks = [
                m & np.isin(np.arange(s.pid_base, s.pid_base + s.n_passages), allowed)
                for s, m in zip(snap.segments, masks, strict=True)
            ]
        use_vectors = snap.manifest.keep_vectors
        results = []
        for query in self.model.encode_queries(queries):
            probed = None  # computed for the first segment that PLAID searches, if any
            pids, scores = [], []
            for segment, mask in zip(snap.segments, masks, strict=True):
                n_allowed = int(mask.sum())
                if n_allowed == 0:
                    continue
                exhaustive = (
                    exact if exact is not None else choose_exhaustive(segment, n_allowed, params)
                )
                if exhaustive:
                    local, found = exhaustive_search(
                        snap.codec, segment, query, k, mask, use_vectors
                    )
                else:
                    if probed is None:
                        probed = probe(snap.codec, query, params.ncells)
                    local, found = search_segment(
                        snap.codec, segment, query, probed, k, params, mask, use_vectors
                    )
                pids.append(np.asarray(local, dtype=np.int64) + segment.pid_base)
                scores.append(np.asarray(found, dtype=np.float32))
            if not pids:
                results.append(empty)
                continue
            all_pids, all_scores = np.concatenate(pids), np.concatenate(scores)
            order = np.lexsort((all_pids, -all_scores))[:k]
            results.append((all_pids[order], all_scores[order]))
        return results


def kmeans_sample(n_vectors: int, n_centroids: int, seed: int) -> np.ndarray:
    """Sorted row ids of the codec's training sample: ``min(n, KMEANS_POINTS_PER_CENTROID *
    n_centroids)`` distinct rows drawn with ``seed``
    (deterministic: the same collection and generation give the same codec)."""
    n_sample = min(n_vectors, KMEANS_POINTS_PER_CENTROID * n_centroids)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_vectors, size=n_sample, replace=False))


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a read-only ``np.memmap`` (e.g. the spill file) from this
    process's RSS with ``madvise(MADV_DONTNEED)``; they stay in the page cache, and are read
    again on the next access. A no-op for in-memory arrays or where madvise is unavailable."""
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def _outgrown(manifest: Manifest, new_vectors: int) -> bool:
    if manifest.codec_vectors >= RETRAIN_BELOW:
        return False
    total = sum(s.n_tokens for s in manifest.segments) + new_vectors
    return total >= RETRAIN_GROWTH * max(manifest.codec_vectors, 1)


def _hits(pids: np.ndarray, scores: np.ndarray, rows: dict[int, PassageRow]) -> list[Hit]:
    hits = []
    for rank, (pid, score) in enumerate(zip(pids.tolist(), scores.tolist(), strict=True), start=1):
        row = rows[pid]
        hits.append(
            Hit(
                f"{row.doc_id}#{row.chunk}",
                row.doc_id,
                row.text,
                float(score),
                rank,
                row.metadata,
                row.start,
                row.end,
            )
        )
    return hits


def token_rows(offsets: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """Token row numbers of the given passages, concatenated in the given order."""
    starts, lengths = offsets[passages], offsets[passages + 1] - offsets[passages]
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + within


def _gather(segments: Sequence[Segment], pids: np.ndarray):
    """Codes, residuals, vectors and doclens of the given global pids, in pid order."""
    codes, residuals, vectors, doclens = [], [], [], []
    for segment in segments:
        inside = (pids >= segment.pid_base) & (pids < segment.pid_base + segment.n_passages)
        local = pids[inside] - segment.pid_base
        rows = token_rows(segment.offsets, local)
        codes.append(np.asarray(segment.codes[rows]))
        residuals.append(np.asarray(segment.residuals[rows]))
        if segment.vectors is not None:
            vectors.append(np.asarray(segment.vectors[rows]))
        doclens.append(np.asarray(segment.doclens[local]))
    stacked_vectors = np.concatenate(vectors) if vectors else None
    return (
        np.concatenate(codes),
        np.concatenate(residuals),
        stacked_vectors,
        np.concatenate(doclens),
    )


def _model_identity(model: ColBERT) -> dict[str, Any]:
    weight = model.linear.weight.detach().float().cpu().numpy()
    return {
        "name": model.name,
        "fingerprint": hashlib.sha256(weight.tobytes()).hexdigest()[:16],
        "encoding": asdict(model.config),
    }


def _check_ids(ids: Sequence[str] | None, n: int | None) -> list[str]:
    if ids is None:
        if n is None:
            raise TypeError("ids must be a string or a list of strings")
        return [uuid.uuid4().hex for _ in range(n)]
    if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
        raise TypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    if n is not None and len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} texts; pass one id per text")
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not doc_id:
            raise TypeError(f"ids[{i}] must be a non-empty string, got {doc_id!r}")
    dupes = sorted(doc_id for doc_id, count in Counter(ids).items() if count > 1)
    if dupes:
        raise ValueError(f"duplicate ids in one call: {dupes[:5]}; ids must be unique")
    return list(ids)


def _check_metadatas(metadatas: Sequence[dict[str, Any] | None] | None, n: int) -> list[str]:
    if metadatas is None:
        return ["{}"] * n
    if not isinstance(metadatas, (list, tuple)) or len(metadatas) != n:
        raise ValueError(f"metadatas must be a list with one dict per text ({n})")
    out = []
    for i, metadata in enumerate(metadatas):
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise TypeError(f"metadatas[{i}] must be a dict, got {type(metadata).__name__}")
        try:
            out.append(json.dumps(metadata, ensure_ascii=False, sort_keys=True, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise TypeError(f"metadatas[{i}] is not JSON-serialisable: {error}") from error
    return out
