"""Import an index built by colbert-ai (Stanford ColBERTv2 / PLAID) or RAGatouille, without
re-encoding anything.

A colbert-ai index folder holds::

    metadata.json (or plan.json)   {"config": {dim, nbits, checkpoint, doc_maxlen, ...}, ...}
    centroids.pt                   float16 [C, D]
    buckets.pt                     (bucket_cutoffs [2**nbits - 1], bucket_weights [2**nbits])
    avg_residual.pt                a scalar (or [D])
    {i}.codes.pt                   int32 [T_i]             nearest centroid per token vector
    {i}.residuals.pt               uint8 [T_i, D*nbits/8]  packed residual buckets
    doclens.{i}.json               [P_i] token vectors per passage of chunk i
    {i}.metadata.json              {"passage_offset", "num_passages", "num_embeddings", ...}
    ivf.pid.pt                     the inverted file (not read: we rebuild our own)

RAGatouille adds ``collection.json`` (the passage texts, by pid), ``pid_docid_map.json``
(pid -> document id) and optionally ``docid_metadata_map.json`` (document id -> metadata).

The residual bit layout is the same as ours (see :mod:`jacolbert_core.index.codec`), so codes
and residuals are copied as they are into one segment, and the codec is built from the
reference's centroids (float16, as saved), bucket cut-offs and weights. The result is a
normal index at generation 1: ``add``, ``delete``, ``compact`` and ``search`` work on it.

``.pt`` files are read with ``torch.load(..., weights_only=True)`` only: a file that holds
anything but plain tensors (a pickled object) is refused, never unpickled.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from jacolbert_core.errors import JaColBERTError
from jacolbert_core.index import manifest as manifests
from jacolbert_core.index.codec import ResidualCodec
from jacolbert_core.index.index import SEGMENTS_DIR, Index
from jacolbert_core.index.lock import writer_lock
from jacolbert_core.index.manifest import SegmentEntry
from jacolbert_core.index.segment import Segment
from jacolbert_core.model.colbert import ColBERT

__all__ = ["PlaidImportError", "PlaidIndex", "import_plaid_index", "read_plaid_index"]

# Separator between the passages of one RAGatouille document in the stored document text.
PASSAGE_SEPARATOR = "\n\n"
# Encoding settings recorded in a colbert-ai index config, compared with the model's.
_ENCODING_KEYS = {
    "query_maxlen": "query_maxlen",
    "doc_maxlen": "doc_maxlen",
    "attend_to_mask_tokens": "attend_to_mask_tokens",
    "mask_punctuation": "mask_punctuation",
    "query_token_id": "query_token",
    "doc_token_id": "doc_token",
}


class PlaidImportError(JaColBERTError, ValueError):
    """A colbert-ai / RAGatouille index (or its collection) cannot be imported."""


@dataclass
class PlaidIndex:
    """The parts of a colbert-ai index that an import needs, read and checked."""

    path: Path
    config: dict[str, Any]
    codec: ResidualCodec
    codes: np.ndarray  # int32 [T]
    residuals: np.ndarray  # uint8 [T, D*nbits/8]
    doclens: np.ndarray  # int32 [P]
    pid_docid: dict[int, str] | None = None  # RAGatouille pid -> document id
    docid_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def n_passages(self) -> int:
        return len(self.doclens)

    @property
    def checkpoint(self) -> str | None:
        checkpoint = self.config.get("checkpoint")
        return str(checkpoint) if checkpoint else None


@dataclass
class _Passage:
    text: str
    doc_id: str | None = None
    metadata: dict[str, Any] | None = None


def import_plaid_index(
    plaid_dir: str | Path,
    collection: str | Path | Sequence[str] | Sequence[dict[str, Any]] | None,
    index_path: str | Path,
    model: ColBERT | str | Path | None = None,
    *,
    overwrite: bool = False,
    device: str | None = None,
) -> Index:
    """Create a JaColBERT index at ``index_path`` from a colbert-ai / RAGatouille index.

    Args:
        plaid_dir: the colbert-ai index folder (the one holding ``metadata.json``).
        collection: the passage texts, in pid order: a colbert-ai TSV (``pid\\ttext[\\ttitle]``),
            a JSONL file (one string, or one object with ``text`` and optional ``id`` and
            ``metadata``, per line), a JSON list of the same, or a Python list. ``None`` reads
            RAGatouille's ``collection.json`` from ``plaid_dir``.
        index_path: the new index directory (must not exist or be empty, unless ``overwrite``).
        model: a :class:`ColBERT`, a checkpoint name/path, or ``None`` for the ``checkpoint``
            recorded in the index's metadata. Its ``dim`` must match the index; its encoding
            settings (from the checkpoint) are used for later ``add`` and ``search`` calls.
        overwrite: replace an existing JaColBERT index at ``index_path``.
        device: device for a model loaded here.

    Document ids: RAGatouille's ``pid_docid_map.json`` when present (the passages of one
    document become the passages of one JaColBERT document, their texts joined with a blank
    line as the document text), else the collection's ``id`` fields, else ``str(pid)``.
    Passage ``pid`` of the reference index is passage number ``pid`` of the new index.
    """
    plaid = read_plaid_index(plaid_dir)
    passages = _read_collection(collection, plaid.path)
    if len(passages) != plaid.n_passages:
        raise PlaidImportError(
            f"the collection has {len(passages)} passages but the index at {plaid.path} has "
            f"{plaid.n_passages}; pass the collection the index was built from (in pid order)"
        )
    documents, rows = _documents(plaid, passages)
    model = _resolve_model(model, plaid, device)

    index_path = Path(index_path)
    existed = index_path.exists()
    index = Index.create(index_path, model, nbits=plaid.codec.nbits, overwrite=overwrite)
    try:
        _commit(index, plaid, documents, rows)
    except BaseException:
        # leave no half-imported index behind: the directory was new, empty, or an index
        # that overwrite=True had already removed
        index._store.close()
        shutil.rmtree(index_path, ignore_errors=True)
        if existed:
            index_path.mkdir(parents=True, exist_ok=True)
        raise
    return index


def read_plaid_index(plaid_dir: str | Path) -> PlaidIndex:
    """Read and check the codec, codes, residuals and doclens of a colbert-ai index folder
    (and RAGatouille's id maps when present). Nothing is unpickled."""
    path = Path(plaid_dir)
    if not path.is_dir():
        raise PlaidImportError(f"{path} is not a directory; pass a colbert-ai index folder")
    config, meta = _read_config(path)
    dim, nbits = _config_int(config, "dim", path), _config_int(config, "nbits", path)

    centroids = _as_float(_load_tensor(path / "centroids.pt"), path / "centroids.pt", ndim=2)
    buckets = _load_tensor(path / "buckets.pt", tuple_of=2)
    cutoffs = _as_float(buckets[0], path / "buckets.pt", ndim=1)
    weights = _as_float(buckets[1], path / "buckets.pt", ndim=1)
    avg_residual = _as_float(_load_tensor(path / "avg_residual.pt"), path / "avg_residual.pt")
    if centroids.shape[1] != dim:
        raise PlaidImportError(
            f"{path / 'centroids.pt'} has dim {centroids.shape[1]} but the index config says "
            f"dim={dim}"
        )
    try:
        codec = ResidualCodec(
            centroids=centroids,
            bucket_cutoffs=cutoffs,
            bucket_weights=weights,
            avg_residual=avg_residual.reshape(-1),
            nbits=nbits,
        )
    except ValueError as error:
        raise PlaidImportError(f"the codec of {path} is not usable: {error}") from error

    codes, residuals, doclens = _read_chunks(path, meta, codec)
    pid_docid, docid_metadata = _read_ragatouille_maps(path, len(doclens))
    return PlaidIndex(path, config, codec, codes, residuals, doclens, pid_docid, docid_metadata)


# -- reading the reference index ---------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise PlaidImportError(f"{path} is missing; {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PlaidImportError(f"{path} is not valid JSON ({error})") from error


def _read_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    for name in ("metadata.json", "plan.json"):
        if (path / name).is_file():
            meta = _read_json(path / name, "")
            config = meta.get("config") if isinstance(meta, dict) else None
            if not isinstance(config, dict):
                raise PlaidImportError(f"{path / name} has no 'config' object")
            return config, meta
    raise PlaidImportError(
        f"{path} has neither metadata.json nor plan.json: is it a colbert-ai index folder "
        "(e.g. experiments/<name>/indexes/<index> or .ragatouille/colbert/indexes/<index>)?"
    )


def _config_int(config: dict[str, Any], key: str, path: Path) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlaidImportError(f"the index config in {path} has no integer {key!r} ({value!r})")
    return value


def _load_tensor(path: Path, tuple_of: int | None = None) -> Any:
    """``torch.load(weights_only=True)``: tensors only, never arbitrary pickled objects."""
    import torch

    if not path.is_file():
        raise PlaidImportError(
            f"{path.name} is missing from {path.parent}; the colbert-ai index is incomplete "
            "(was indexing interrupted?)"
        )
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure means: not a plain tensor file
        raise PlaidImportError(
            f"refusing to read {path}: it is not a plain tensor file that "
            f"torch.load(weights_only=True) accepts ({_load_failure(error)}). jacolbert never "
            "unpickles arbitrary objects; if you trust the file, load it yourself and re-save "
            "its tensors with torch.save(tensor)"
        ) from error
    if tuple_of is None:
        ok = isinstance(value, torch.Tensor)
    else:
        ok = (
            isinstance(value, (tuple, list))
            and len(value) == tuple_of
            and all(isinstance(item, torch.Tensor) for item in value)
        )
    if not ok:
        expected = f"a tuple of {tuple_of} tensors" if tuple_of else "a tensor"
        raise PlaidImportError(f"{path} holds {type(value).__name__}, expected {expected}")
    return value


def _load_failure(error: Exception) -> str:
    """The informative part of a torch.load failure (its messages run to a paragraph)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = " ".join(text.split(marker, 1)[1].split())
        detail = detail.split(" Please use ", 1)[0].split(" Check the documentation", 1)[0]
    else:
        detail = " ".join(text.split())
    detail = detail.strip()
    if len(detail) > 200:
        detail = detail[:199] + "…"
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _as_float(tensor: Any, path: Path, ndim: int | None = None) -> np.ndarray:
    """The tensor's values as float32, or as float16 where saved so (colbert-ai's centroids)."""
    import torch

    if not tensor.is_floating_point():
        raise PlaidImportError(f"{path} holds {tensor.dtype} values, expected floating point")
    tensor = tensor.detach().to("cpu")
    array = (tensor if tensor.dtype == torch.float16 else tensor.float()).numpy()
    if ndim is not None and array.ndim != ndim:
        raise PlaidImportError(f"{path} holds shape {tuple(array.shape)}, expected {ndim}-D")
    return array


def _chunk_count(path: Path, meta: dict[str, Any]) -> int:
    n = meta.get("num_chunks")
    if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
        return n
    n = 0
    while (path / f"doclens.{n}.json").is_file():
        n += 1
    if n == 0:
        raise PlaidImportError(f"{path} has no doclens.0.json: the index holds no chunks")
    return n


def _read_chunks(
    path: Path, meta: dict[str, Any], codec: ResidualCodec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes, residuals, doclens = [], [], []
    n_passages = 0
    for chunk in range(_chunk_count(path, meta)):
        lengths = _read_json(path / f"doclens.{chunk}.json", "the colbert-ai index is incomplete")
        if not isinstance(lengths, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths
        ):
            raise PlaidImportError(f"{path / f'doclens.{chunk}.json'} is not a list of counts")
        chunk_codes = _load_tensor(path / f"{chunk}.codes.pt")
        chunk_residuals = _load_tensor(path / f"{chunk}.residuals.pt")
        if chunk_codes.dim() != 1 or chunk_codes.is_floating_point():
            raise PlaidImportError(f"{path / f'{chunk}.codes.pt'} is not a 1-D integer tensor")
        if chunk_residuals.dtype.is_floating_point or tuple(chunk_residuals.shape[1:]) != (
            codec.bytes_per_vector,
        ):
            raise PlaidImportError(
                f"{path / f'{chunk}.residuals.pt'} has shape {tuple(chunk_residuals.shape)} "
                f"{chunk_residuals.dtype}, expected uint8 [n, {codec.bytes_per_vector}] "
                f"(dim {codec.dim} x {codec.nbits} bits / 8)"
            )
        chunk_codes = chunk_codes.numpy().astype(np.int64)
        chunk_residuals = chunk_residuals.numpy()
        if chunk_residuals.dtype != np.uint8:
            raise PlaidImportError(f"{path / f'{chunk}.residuals.pt'} is not uint8")
        n_tokens = sum(lengths)
        if len(chunk_codes) != n_tokens or len(chunk_residuals) != n_tokens:
            raise PlaidImportError(
                f"chunk {chunk} of {path} is inconsistent: doclens.{chunk}.json counts "
                f"{n_tokens} token vectors, {chunk}.codes.pt has {len(chunk_codes)} and "
                f"{chunk}.residuals.pt {len(chunk_residuals)}"
            )
        if len(chunk_codes) and (chunk_codes.min() < 0 or chunk_codes.max() >= codec.num_centroids):
            raise PlaidImportError(
                f"{path / f'{chunk}.codes.pt'} has centroid ids outside [0, "
                f"{codec.num_centroids}): the chunk does not belong to this centroids.pt"
            )
        chunk_meta_path = path / f"{chunk}.metadata.json"
        if chunk_meta_path.is_file():
            chunk_meta = _read_json(chunk_meta_path, "")
            offset = chunk_meta.get("passage_offset") if isinstance(chunk_meta, dict) else None
            if offset is not None and offset != n_passages:
                raise PlaidImportError(
                    f"{chunk_meta_path} says passage_offset={offset}, but the chunks before it "
                    f"hold {n_passages} passages"
                )
        codes.append(chunk_codes.astype(np.int32))
        residuals.append(chunk_residuals)
        doclens.append(np.asarray(lengths, dtype=np.int32))
        n_passages += len(lengths)
    expected = meta.get("num_embeddings")
    total = sum(len(c) for c in codes)
    if isinstance(expected, int) and expected != total:
        raise PlaidImportError(
            f"{path} metadata says {expected} token vectors but its chunks hold {total}"
        )
    return np.concatenate(codes), np.concatenate(residuals), np.concatenate(doclens)


def _read_ragatouille_maps(
    path: Path, n_passages: int
) -> tuple[dict[int, str] | None, dict[str, dict[str, Any]]]:
    map_path = path / "pid_docid_map.json"
    if not map_path.is_file():
        return None, {}
    raw = _read_json(map_path, "")
    if not isinstance(raw, dict):
        raise PlaidImportError(f"{map_path} must be a JSON object (pid -> document id)")
    pid_docid: dict[int, str] = {}
    for key, value in raw.items():
        try:
            pid = int(key)
        except ValueError as error:
            raise PlaidImportError(f"{map_path}: {key!r} is not a passage id") from error
        if value is None or str(value) == "":
            raise PlaidImportError(f"{map_path}: passage {pid} has an empty document id")
        pid_docid[pid] = str(value)
    missing = sorted(set(range(n_passages)) - set(pid_docid))
    if missing:
        raise PlaidImportError(
            f"{map_path} has no document id for {len(missing)} passages (e.g. pid {missing[0]})"
        )
    metadata: dict[str, dict[str, Any]] = {}
    meta_path = path / "docid_metadata_map.json"
    if meta_path.is_file():
        raw_meta = _read_json(meta_path, "")
        if not isinstance(raw_meta, dict):
            raise PlaidImportError(f"{meta_path} must be a JSON object (document id -> metadata)")
        for doc_id, value in raw_meta.items():
            if value is not None and not isinstance(value, dict):
                raise PlaidImportError(f"{meta_path}: metadata of {doc_id!r} is not an object")
            metadata[str(doc_id)] = value or {}
    return pid_docid, metadata


# -- the collection ---------------------------------------------------------------------------


def _read_collection(
    collection: str | Path | Sequence[Any] | None, plaid_dir: Path
) -> list[_Passage]:
    if collection is None:
        path = plaid_dir / "collection.json"
        if not path.is_file():
            raise PlaidImportError(
                f"no collection given and {plaid_dir} has no collection.json (RAGatouille); "
                "pass the collection the index was built from (a pid\\ttext TSV, JSONL or list)"
            )
        return _from_items(_read_json(path, ""), str(path))
    if isinstance(collection, (str, Path)):
        path = Path(collection)
        if not path.is_file():
            raise PlaidImportError(f"collection {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".tsv":
            return _read_tsv(path)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix == ".json":
            return _from_items(_read_json(path, ""), str(path))
        raise PlaidImportError(
            f"unsupported collection {path}: use a colbert-ai .tsv (pid\\ttext), .jsonl or .json"
        )
    if isinstance(collection, (list, tuple)):
        return _from_items(collection, "collection")
    raise PlaidImportError(
        f"collection must be a path or a list of texts, got {type(collection).__name__}"
    )


def _read_tsv(path: Path) -> list[_Passage]:
    """colbert-ai's format: ``pid\\tpassage[\\ttitle]`` per line (a title is prepended as
    ``title | passage``, as colbert-ai does); a header line with pid ``id`` is skipped."""
    texts: dict[int, str] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise PlaidImportError(f"{path}:{number}: expected pid<TAB>text")
            pid_field, text, *rest = fields
            if number == 1 and pid_field.strip() == "id":
                continue
            try:
                pid = int(pid_field)
            except ValueError as error:
                raise PlaidImportError(
                    f"{path}:{number}: {pid_field!r} is not an integer passage id"
                ) from error
            if pid in texts:
                raise PlaidImportError(f"{path}:{number}: passage id {pid} appears twice")
            texts[pid] = f"{rest[0]} | {text}" if rest else text
    if sorted(texts) != list(range(len(texts))):
        missing = sorted(set(range(len(texts))) - set(texts))
        raise PlaidImportError(
            f"{path}: passage ids must be 0..{len(texts) - 1} (colbert-ai pids); "
            f"{missing[0] if missing else '?'} is missing"
        )
    return [_Passage(texts[pid]) for pid in range(len(texts))]


def _read_jsonl(path: Path) -> list[_Passage]:
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise PlaidImportError(f"{path}:{number}: not valid JSON ({error})") from error
    return _from_items(items, str(path))


def _from_items(items: Any, where: str) -> list[_Passage]:
    if not isinstance(items, (list, tuple)):
        raise PlaidImportError(f"{where} must be a list of passages")
    passages = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            passages.append(_Passage(item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            metadata = item.get("metadata")
            if metadata is not None and not isinstance(metadata, dict):
                raise PlaidImportError(f"{where}[{i}]: 'metadata' must be an object")
            doc_id = item.get("id")
            passages.append(
                _Passage(item["text"], None if doc_id in (None, "") else str(doc_id), metadata)
            )
        else:
            raise PlaidImportError(
                f"{where}[{i}] must be a string or an object with a string 'text', "
                f"got {type(item).__name__}"
            )
    return passages


def _documents(
    plaid: PlaidIndex, passages: list[_Passage]
) -> tuple[list[tuple[str, str, str]], list[tuple[int, str, int, int, int, str]]]:
    """(doc_id, text, metadata json) documents and (pid, doc_id, chunk, start, end, text)
    passage rows; passages of one document in pid order."""
    owners: dict[str, list[int]] = {}
    for pid, passage in enumerate(passages):
        if plaid.pid_docid is not None:
            doc_id = plaid.pid_docid[pid]
        else:
            doc_id = passage.doc_id if passage.doc_id is not None else str(pid)
        owners.setdefault(doc_id, []).append(pid)
    documents, rows = [], []
    for doc_id, pids in owners.items():
        metadata = plaid.docid_metadata.get(doc_id)
        if metadata is None:
            metadata = next((passages[p].metadata for p in pids if passages[p].metadata), {})
        try:
            metadata_json = json.dumps(
                metadata, ensure_ascii=False, sort_keys=True, allow_nan=False
            )
        except (TypeError, ValueError) as error:
            raise PlaidImportError(
                f"metadata of document {doc_id!r} is not JSON-serialisable: {error}"
            ) from error
        start, parts = 0, []
        for chunk, pid in enumerate(pids):
            text = passages[pid].text
            rows.append((pid, doc_id, chunk, start, start + len(text), text))
            parts.append(text)
            start += len(text) + len(PASSAGE_SEPARATOR)
        documents.append((doc_id, PASSAGE_SEPARATOR.join(parts), metadata_json))
    rows.sort()
    return documents, rows


# -- the model --------------------------------------------------------------------------------


def _resolve_model(
    model: ColBERT | str | Path | None, plaid: PlaidIndex, device: str | None
) -> ColBERT:
    if not isinstance(model, ColBERT):
        if model is not None and not isinstance(model, (str, Path)):
            raise TypeError(
                "model must be a ColBERT, a checkpoint name or path, or None, "
                f"got {type(model).__name__}"
            )
        name = model if model is not None else plaid.checkpoint
        if name is None:
            raise PlaidImportError(
                f"the index at {plaid.path} does not name its checkpoint; pass the model "
                "(model=... or --model)"
            )
        try:
            model = ColBERT.from_pretrained(name, device=device)
        except Exception as error:
            source = "given" if model is not None else f"named in {plaid.path}/metadata.json"
            raise PlaidImportError(
                f"could not load the checkpoint {str(name)!r} {source} ({error}); pass the "
                "model the index was built with (model=... or --model)"
            ) from error
    if model.config.dim != plaid.codec.dim:
        raise PlaidImportError(
            f"the model {model.name!r} has dim {model.config.dim} but the index at {plaid.path} "
            f"holds dim-{plaid.codec.dim} vectors; pass the model the index was built with"
        )
    differences = []
    for key, attribute in _ENCODING_KEYS.items():
        if key in plaid.config and plaid.config[key] != getattr(model.config, attribute):
            differences.append(
                f"{key}: index {plaid.config[key]!r}, model {getattr(model.config, attribute)!r}"
            )
    if differences:
        warnings.warn(
            f"the index at {plaid.path} was built with other encoding settings than the model's "
            f"({'; '.join(differences)}); the model's settings will be used for new documents "
            "and queries. Pass ColBERT.from_pretrained(checkpoint, <setting>=...) to match them.",
            stacklevel=3,
        )
    return model


# -- writing ----------------------------------------------------------------------------------


def _commit(
    index: Index,
    plaid: PlaidIndex,
    documents: list[tuple[str, str, str]],
    rows: list[tuple[int, str, int, int, int, str]],
) -> None:
    """Generation 1 of a fresh index, in ``Index.add``'s order: codec and segment files,
    then SQLite rows, then the manifest (the commit point)."""
    with writer_lock(index.path, 0.0):
        manifest = index._recover()
        generation = manifest.generation + 1
        codec_name = f"codec-{generation:06d}"
        plaid.codec.save(index.path / codec_name)
        name = f"seg-{generation:06d}-{uuid.uuid4().hex[:6]}"
        files = Segment.write(
            index.path / SEGMENTS_DIR / name,
            plaid.codes,
            plaid.residuals,
            plaid.doclens,
            plaid.codec.num_centroids,
        )
        entry = SegmentEntry(
            name, manifest.next_pid, plaid.n_passages, int(plaid.doclens.sum()), files
        )
        rows = [(entry.pid_base + pid, *rest) for pid, *rest in rows]
        index._store.write(generation, documents=documents, passages=rows)
        committed = replace(
            manifest,
            codec=codec_name,
            codec_vectors=entry.n_tokens,
            segments=(entry,),
            generation=generation,
            next_pid=entry.pid_end,
            updated=time.time(),
        )
        manifests.write(index.path, committed)
    index._refresh()
