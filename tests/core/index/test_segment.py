"""Segment file format: format 2 (small codes, Elias-Fano IVF) round trips, format 1 still reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jacolbert_core.index import manifest as manifests
from jacolbert_core.index.index import SEGMENTS_DIR, Index
from jacolbert_core.index.segment import (
    CorruptIndexError,
    Segment,
    decode_ivf,
    encode_ivf,
    file_digest,
    ivf_keys,
    sorted_unique,
)


def build_ivf(codes, doclens, n_centroids) -> tuple[np.ndarray, np.ndarray]:
    """Format-1 IVF (plain lists), as older versions wrote it: centroid -> unique local
    passage numbers (int32), and int64 offsets."""
    keys = ivf_keys(codes, doclens)
    centroids, passages = np.divmod(keys, max(len(doclens), 1))
    offsets = np.zeros(n_centroids + 1, dtype=np.int64)
    np.cumsum(np.bincount(centroids, minlength=n_centroids), out=offsets[1:])
    return passages.astype(np.int32), offsets


def plain_lists(codes, doclens, n_centroids, cells):
    ivf, offsets = build_ivf(np.asarray(codes), np.asarray(doclens), n_centroids)
    return np.concatenate(
        [ivf[offsets[c] : offsets[c + 1]] for c in cells] + [np.zeros(0, np.int32)]
    ).astype(np.int64)


def write_format1(directory: Path, codes, residuals, doclens, n_centroids) -> dict[str, str]:
    """A segment as older versions wrote it: int32 codes and IVF, int64 offsets."""
    directory.mkdir(parents=True)
    ivf, offsets = build_ivf(np.asarray(codes), np.asarray(doclens), n_centroids)
    arrays = {
        "codes": np.asarray(codes, dtype=np.int32),
        "residuals": np.asarray(residuals, dtype=np.uint8),
        "doclens": np.asarray(doclens, dtype=np.int32),
        "ivf": ivf.astype(np.int32),
        "ivf_offsets": offsets.astype(np.int64),
    }
    files = {}
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)
        files[f"{name}.npy"] = file_digest(directory / f"{name}.npy")
    return files


@pytest.mark.parametrize(
    "n_passages, mean_len, n_centroids",
    [(1, 5, 4), (7, 3, 1), (50, 20, 16), (300, 30, 1024), (2000, 8, 64), (40, 10, 4096)],
)
def test_ivf_round_trip(n_passages, mean_len, n_centroids):
    rng = np.random.default_rng(n_passages * 7 + n_centroids)
    doclens = rng.integers(0, 2 * mean_len + 1, n_passages).astype(np.int32)
    codes = rng.integers(0, n_centroids, int(doclens.sum()))
    ivf, offsets = encode_ivf(codes, doclens, n_centroids)
    assert ivf.dtype == np.uint8 and offsets.shape == (n_centroids + 1, 2)
    every = np.arange(n_centroids)
    got = decode_ivf(ivf, offsets, n_passages, every)
    np.testing.assert_array_equal(got, plain_lists(codes, doclens, n_centroids, every))
    for _ in range(5):
        cells = np.unique(rng.integers(0, n_centroids, rng.integers(1, 10)))
        got = decode_ivf(ivf, offsets, n_passages, cells)
        np.testing.assert_array_equal(got, plain_lists(codes, doclens, n_centroids, cells))


def test_ivf_of_an_empty_segment():
    doclens = np.zeros(3, dtype=np.int32)
    ivf, offsets = encode_ivf(np.zeros(0, np.int64), doclens, 8)
    assert len(decode_ivf(ivf, offsets, 3, np.arange(8))) == 0


def test_ivf_keys_are_sorted_unique():
    rng = np.random.default_rng(0)
    doclens = rng.integers(0, 40, 200).astype(np.int32)
    codes = rng.integers(0, 30, int(doclens.sum()))
    passage = np.repeat(np.arange(200), doclens)
    np.testing.assert_array_equal(ivf_keys(codes, doclens), np.unique(codes * 200 + passage))


@pytest.mark.parametrize("n", [0, 1, 2, 500])
def test_sorted_unique(n):
    values = np.random.default_rng(n).integers(0, 50, n)
    np.testing.assert_array_equal(sorted_unique(values.copy()), np.unique(values))


def segment_data(seed=0, n_passages=120, n_centroids=256, dim_bytes=32):
    rng = np.random.default_rng(seed)
    doclens = rng.integers(1, 40, n_passages).astype(np.int32)
    n_tokens = int(doclens.sum())
    codes = rng.integers(0, n_centroids, n_tokens).astype(np.int32)
    residuals = rng.integers(0, 256, (n_tokens, dim_bytes)).astype(np.uint8)
    return codes, residuals, doclens


def test_segment_round_trip_and_old_format(tmp_path):
    codes, residuals, doclens = segment_data()
    files = Segment.write(tmp_path / "new", codes, residuals, doclens, 256)
    new = Segment.load(tmp_path / "new", "new", 0, files)
    old_files = write_format1(tmp_path / "old", codes, residuals, doclens, 256)
    old = Segment.load(tmp_path / "old", "old", 0, old_files)
    assert new.format == 2 and old.format == 1
    assert np.asarray(new.codes).dtype == np.uint16 and new.ivf.dtype == np.uint8
    for segment in (new, old):
        assert segment.n_centroids == 256 and segment.n_tokens == len(codes)
        np.testing.assert_array_equal(segment.codes, codes)
        np.testing.assert_array_equal(segment.residuals, residuals)
        rows = np.array([5, 0, len(codes) - 1, 17])
        np.testing.assert_array_equal(segment.take_codes(rows), codes[rows])
        for cells in (np.arange(256), np.array([3]), np.array([0, 9, 255])):
            np.testing.assert_array_equal(
                segment.ivf_passages(cells), plain_lists(codes, doclens, 256, cells)
            )
    assert new.offsets is new.offsets  # cached
    assert not new.offsets.flags.writeable
    np.testing.assert_array_equal(new.offsets, np.concatenate([[0], np.cumsum(doclens)]))
    new_bytes = sum((tmp_path / "new" / f).stat().st_size for f in files)
    old_bytes = sum((tmp_path / "old" / f).stat().st_size for f in old_files)
    assert new_bytes < old_bytes


def test_many_centroids_keep_int32_codes(tmp_path):
    codes, residuals, doclens = segment_data(n_passages=10)
    codes[0] = 70_000
    files = Segment.write(tmp_path / "s", codes, residuals, doclens, 70_001)
    segment = Segment.load(tmp_path / "s", "s", 0, files)
    assert np.asarray(segment.codes).dtype == np.int32 and segment.take_codes([0])[0] == 70_000
    np.testing.assert_array_equal(
        segment.ivf_passages(np.array([70_000])), plain_lists(codes, doclens, 70_001, [70_000])
    )


def test_truncated_ivf_is_reported(tmp_path):
    codes, residuals, doclens = segment_data()
    files = Segment.write(tmp_path / "s", codes, residuals, doclens, 256)
    ivf = np.load(tmp_path / "s" / "ivf.npy")
    np.save(tmp_path / "s" / "ivf.npy", ivf[:-3])
    with pytest.raises(CorruptIndexError):
        Segment.load(tmp_path / "s", "s", 0, files)


def test_negative_passage_lengths_are_reported(tmp_path):
    """Lengths that still sum to the token count but would send search outside its rows."""
    codes, residuals, doclens = segment_data()
    files = Segment.write(tmp_path / "s", codes, residuals, doclens, 256)
    bad = np.asarray(doclens, dtype=np.int32).copy()
    bad[0], bad[1] = bad[0] + bad[1] + 5, -5
    np.save(tmp_path / "s" / "doclens.npy", bad)
    with pytest.raises(CorruptIndexError, match="negative passage lengths"):
        Segment.load(tmp_path / "s", "s", 0, files)


def test_index_reads_old_segments_and_reports_bytes_per_vector(make_index, queries):
    index = make_index()
    texts = [q["query"] for q in queries[:4]]
    snap = index._snapshot()
    stats = index.stats()
    segment_bytes = sum(
        (index.path / SEGMENTS_DIR / e.name / f).stat().st_size
        for e in snap.manifest.segments
        for f in e.files
    )
    assert stats["bytes_per_vector"] == round(segment_bytes / stats["token_vectors"], 2)
    assert all(s.format == 2 for s in snap.segments)
    before = [index.search(q, k=5, exact=exact) for q in texts for exact in (False, True)]
    before_plaid = [
        index.search(q, k=5, ncells=2, centroid_score_threshold=0.3, ndocs=8, exact=False)
        for q in texts
    ]

    # rewrite every segment in the old layout, as an index built by an older version holds it
    manifest = manifests.read(index.path)
    entries = []
    for entry, segment in zip(manifest.segments, snap.segments, strict=True):
        name = entry.name + "-v1"
        files = write_format1(
            index.path / SEGMENTS_DIR / name,
            np.asarray(segment.codes),
            np.asarray(segment.residuals),
            np.asarray(segment.doclens),
            snap.codec.num_centroids,
        )
        entries.append(type(entry)(name, entry.pid_base, entry.n_passages, entry.n_tokens, files))
    manifest_path = index.path / manifests.MANIFEST
    data = json.loads(manifest_path.read_text())
    for raw, entry in zip(data["segments"], entries, strict=True):
        raw["name"], raw["files"] = entry.name, entry.files
    manifest_path.write_text(json.dumps(data))

    reopened = Index.open(index.path, model=index.model)
    assert all(s.format == 1 for s in reopened._snapshot().segments)
    after = [reopened.search(q, k=5, exact=exact) for q in texts for exact in (False, True)]
    after_plaid = [
        reopened.search(q, k=5, ncells=2, centroid_score_threshold=0.3, ndocs=8, exact=False)
        for q in texts
    ]
    for a, b in zip(before + before_plaid, after + after_plaid, strict=True):
        assert [(h.passage_id, h.score) for h in a] == [(h.passage_id, h.score) for h in b]
    assert reopened.stats()["bytes_per_vector"] > stats["bytes_per_vector"]

    # compaction rewrites old segments in the new format
    assert reopened.delete("doc-001") == 1
    reopened.compact()
    assert all(s.format == 2 for s in reopened._snapshot().segments)
    compacted = [reopened.search(q, k=5, exact=True) for q in texts]
    assert all(hits for hits in compacted)


def test_take_residuals_reads_rows_like_take(tmp_path, monkeypatch):
    from jacolbert_core.index import segment as segment_module

    codes, residuals, doclens = segment_data(n_passages=300)
    files = Segment.write(tmp_path / "s", codes, residuals, doclens, 256)
    segment = Segment.load(tmp_path / "s", "s", 0, files)
    rng = np.random.default_rng(0)
    cases = [
        np.arange(len(codes)),
        np.array([0]),
        np.array([len(codes) - 1, 3, 4, 5, 0]),
        np.sort(rng.choice(len(codes), 200, replace=False)),
        np.zeros(0, dtype=np.int64),
    ]
    for many_runs in (False, True):
        if many_runs:  # the memory-map fallback
            monkeypatch.setattr(segment_module, "_PREAD_MAX_RUNS", 0)
        for rows in cases:
            got = segment.take_residuals(rows)
            assert got.dtype == np.uint8 and got.shape == (len(rows), residuals.shape[1])
            np.testing.assert_array_equal(got, residuals[rows])
    with pytest.raises(IndexError):
        segment.take_residuals(np.array([len(codes)]))
