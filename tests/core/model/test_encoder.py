"""Encoder behaviour: shapes, markers, masking, batching, ranking, formats and errors."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time

import numpy as np
import pytest
import torch

from jacolbert_core import CheckpointError, ColBERT, MissingDependencyError
from jacolbert_core.model import colbert as colbert_module
from jacolbert_core.model.activation import NativeGELU, use_native_gelu
from jacolbert_core.model.tokenization import dynamic_query_length
from jacolbert_core.testing import make_tiny_checkpoint


@pytest.mark.parametrize(
    ("n", "expected"), [(3, 11), (8, 16), (9, 32), (20, 32), (32, 40), (40, 48), (41, 64)]
)
def test_dynamic_query_length_rule(n, expected):
    assert dynamic_query_length(n) == expected


def test_query_layout_fixed(tiny_model):
    batch = tiny_model.tokenizer.queries(["京都の紅葉はいつ見頃ですか？"])
    ids = batch.input_ids[0].tolist()
    tok = tiny_model.tokenizer
    assert len(ids) == tiny_model.config.query_maxlen == batch.lengths[0]
    assert ids[0] == tok.cls_id and ids[1] == tok.query_marker_id
    sep = ids.index(tok.sep_id)
    assert all(i == tok.mask_id for i in ids[sep + 1 :])
    assert batch.attention_mask[0].tolist() == [1] * (sep + 1) + [0] * (len(ids) - sep - 1)
    vectors = tiny_model.encode_queries("京都の紅葉はいつ見頃ですか？")[0]
    assert vectors.shape == (tiny_model.config.query_maxlen, tiny_model.config.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_long_query_is_truncated_to_query_maxlen(tiny_model):
    long_query = "返品と送料と領収書について教えてください。" * 10
    ids = tiny_model.tokenizer.queries([long_query]).input_ids[0].tolist()
    assert len(ids) == tiny_model.config.query_maxlen and ids[-1] == tiny_model.tokenizer.sep_id


def test_dynamic_query_length_in_batches(tiny_checkpoint):
    model = ColBERT.from_pretrained(tiny_checkpoint, device="cpu", query_length="dynamic")
    short, long = "京都", "返品と送料と領収書と受付時間とパスワードについて教えてください。" * 3
    n_short = len(model.tokenizer.token_ids([short])[0]) + 3  # [CLS] [Q] ... [SEP]
    n_long = len(model.tokenizer.token_ids([long])[0]) + 3
    together = model.encode_queries([short, long])
    assert [len(v) for v in together] == [
        dynamic_query_length(n_short),
        dynamic_query_length(n_long),
    ]
    alone = model.encode_queries([short])[0]
    np.testing.assert_allclose(together[0], alone, atol=1e-5)


def test_v25_family_names_turn_dynamic_query_length_on(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "JaColBERTv2.5", architecture="BertModel")
    metadata = json.loads((path / "artifact.metadata").read_text())
    del metadata["jacolbert_query_length"]  # published checkpoints do not carry our key
    (path / "artifact.metadata").write_text(json.dumps(metadata))
    assert ColBERT.from_pretrained(path, device="cpu").config.query_length == "dynamic"
    fixed = ColBERT.from_pretrained(path, device="cpu", query_length="fixed")
    assert fixed.config.query_length == "fixed"


def test_documents_drop_padding_and_punctuation(tiny_model):
    text = "返品は、到着後30日以内です！ (詳しくは: FAQ)"
    ids = tiny_model.tokenizer.document_ids([text])[0]
    expected = sum(1 for i in ids if i not in tiny_model.tokenizer.skiplist)
    [vectors] = tiny_model.encode_documents([text])
    assert len(vectors) == expected < len(ids)
    assert ids[:2] == [tiny_model.tokenizer.cls_id, tiny_model.tokenizer.doc_marker_id]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_documents_truncate_to_doc_maxlen(tiny_model, corpus):
    long_text = "".join(doc["text"] for doc in corpus[:10])
    ids = tiny_model.tokenizer.document_ids([long_text])[0]
    assert len(ids) == tiny_model.config.doc_maxlen and ids[-1] == tiny_model.tokenizer.sep_id


def test_batching_and_order_do_not_change_vectors(tiny_model, corpus):
    texts = [doc["text"] for doc in corpus]
    one_by_one = tiny_model.encode_documents(texts, batch_size=1)
    batched = tiny_model.encode_documents(texts, batch_size=16)
    for a, b in zip(one_by_one, batched, strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-5


def test_chunked_tokenization_keeps_the_global_length_order(tiny_model, corpus, monkeypatch):
    # iter_encode_documents tokenizes in chunks into one int32 table; the batches (global
    # length sort, stable) and so the vectors are exactly those of tokenizing everything at once
    texts = [doc["text"] for doc in corpus] * 2
    sequences = tiny_model.tokenizer.document_ids(texts)
    expected = sorted(range(len(texts)), key=lambda i: len(sequences[i]))
    monkeypatch.setattr(colbert_module, "_TOKENIZE_CHUNK", 7)
    batches = list(tiny_model.iter_encode_documents(texts, batch_size=5))
    assert [i for indices, _ in batches for i in indices] == expected
    ids, offsets = tiny_model._document_id_table(texts)
    assert ids.dtype == np.int32
    assert [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))] == sequences
    monkeypatch.setattr(colbert_module, "_TOKENIZE_CHUNK", 1 << 20)
    for (_, a), (_, b) in zip(
        batches, tiny_model.iter_encode_documents(texts, batch_size=5), strict=True
    ):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert list(tiny_model.iter_encode_documents([], batch_size=5)) == []


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_loaded_models_run_gelu_on_the_native_kernel(tiny_model):
    # oneDNN's GELU caches a primitive per shape (heap fragmentation while streaming) or, with
    # its cache off, rebuilds one per call (slow queries); every exact GELU is swapped out
    activations = [m for m in tiny_model.backbone.modules() if "GELU" in type(m).__name__]
    assert activations and all(type(m) is NativeGELU for m in activations)
    x = torch.randn(3, 17, 64)
    y = NativeGELU()(x)
    assert y.is_contiguous() and y.shape == x.shape
    with torch.backends.mkldnn.flags(enabled=False):  # what torch computes without oneDNN
        np.testing.assert_array_equal(y.numpy(), torch.nn.functional.gelu(x).numpy())
    np.testing.assert_allclose(y.numpy(), torch.nn.functional.gelu(x).numpy(), atol=1e-5)
    v = torch.randn(5)
    np.testing.assert_array_equal(NativeGELU()(v).numpy(), torch.nn.functional.gelu(v).numpy())


def test_use_native_gelu_leaves_other_activations_alone():
    backbone = torch.nn.Sequential(
        torch.nn.GELU(), torch.nn.GELU(approximate="tanh"), torch.nn.Sequential(torch.nn.GELU())
    )
    assert use_native_gelu(backbone) == 2
    assert [type(m).__name__ for m in backbone.modules()] == [
        "Sequential",
        "NativeGELU",
        "GELU",
        "Sequential",
        "NativeGELU",
    ]


def test_rerank_score_and_search_encoded_agree(tiny_model, corpus, queries):
    texts = [doc["text"] for doc in corpus]
    query = queries[0]["query"]
    scores = tiny_model.score(query, texts)
    ranked = tiny_model.rerank(query, texts, k=5)
    assert [i for i, _ in ranked] == list(np.argsort(-scores, kind="stable")[:5])
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    encoded = tiny_model.encode_documents(texts)
    searched = tiny_model.search_encoded([query], encoded, k=5)[0]
    assert [i for i, _ in searched] == [i for i, _ in ranked]
    np.testing.assert_allclose([s for _, s in searched], [s for _, s in ranked], atol=1e-5)
    assert len(tiny_model.rerank(query, texts)) == len(texts)


@pytest.mark.parametrize("k", [0, -1, 1.5, "3", True])
def test_bad_k(tiny_model, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        tiny_model.rerank("質問", ["文書"], k=k)


@pytest.mark.parametrize("bad", ["", "   ", ["ok", ""], ["ok", 3], None, 12])
def test_bad_text_input(tiny_model, bad):
    with pytest.raises((ValueError, TypeError), match="empty|string"):
        tiny_model.encode_documents(bad)
    with pytest.raises((ValueError, TypeError), match="empty|string"):
        tiny_model.encode_queries(bad)


def test_bert_model_architecture_and_save_round_trip(tmp_path, tiny_model, corpus):
    texts = [doc["text"] for doc in corpus[:8]]
    saved = tiny_model.save_pretrained(tmp_path / "saved")
    assert json.loads((saved / "artifact.metadata").read_text())["dim"] == tiny_model.config.dim
    reloaded = ColBERT.from_pretrained(saved, device="cpu")
    for a, b in zip(
        tiny_model.encode_documents(texts), reloaded.encode_documents(texts), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    config = json.loads((saved / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (saved / "config.json").write_text(json.dumps(config))
    as_bert = ColBERT.from_pretrained(saved, device="cpu")
    assert torch.equal(as_bert.linear.weight, tiny_model.linear.weight)


def test_pylate_layout_loads_with_its_settings(tmp_path, tiny_checkpoint, tiny_model):
    from safetensors.torch import save_file

    path = tmp_path / "pylate"
    shutil.copytree(tiny_checkpoint, path)
    (path / "artifact.metadata").unlink()
    state = {k: v.contiguous() for k, v in tiny_model.backbone.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    (path / "1_Dense").mkdir()
    save_file(
        {"linear.weight": tiny_model.linear.weight.detach().clone()},
        str(path / "1_Dense/model.safetensors"),
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    settings = {
        "query_prefix": "[unused0]",
        "document_prefix": "[unused1]",
        "query_length": 24,
        "document_length": 100,
        "attend_to_expansion_tokens": False,
    }
    (path / "config_sentence_transformers.json").write_text(json.dumps(settings))
    model = ColBERT.from_pretrained(path, device="cpu")
    assert (model.config.query_maxlen, model.config.doc_maxlen) == (24, 100)
    text = "味噌汁の作り方を教えてください。"
    np.testing.assert_allclose(
        model.encode_documents(text)[0], tiny_model.encode_documents(text)[0], atol=1e-6
    )


def test_plain_encoder_gets_an_untrained_projection_with_a_warning(
    tmp_path, tiny_checkpoint, tiny_model
):
    from safetensors.torch import save_file

    path = tmp_path / "plain"
    shutil.copytree(tiny_checkpoint, path)
    (path / "artifact.metadata").unlink()
    save_file(
        {k: v.contiguous() for k, v in tiny_model.backbone.state_dict().items()},
        str(path / "model.safetensors"),
    )
    with pytest.warns(UserWarning, match="untrained"):
        model = ColBERT.from_pretrained(path, device="cpu", dim=16)
    assert model.encode_documents("テスト文書です。")[0].shape[1] == 16


def test_metadata_without_projection_is_refused(tmp_path, tiny_checkpoint, tiny_model):
    from safetensors.torch import save_file

    path = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, path)
    save_file(
        {k: v.contiguous() for k, v in tiny_model.backbone.state_dict().items()},
        str(path / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="linear.weight"):
        ColBERT.from_pretrained(path, device="cpu")


def test_unknown_paths_and_non_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ColBERT.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        ColBERT.from_pretrained(tmp_path / "empty")


def test_unreachable_hub_fails_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="local directory"):
        ColBERT.from_pretrained("answerdotai/JaColBERTv2.5")
    assert time.perf_counter() - start < 10


def test_missing_fugashi_names_the_packages(monkeypatch, tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "fugashi", None)
    with pytest.raises(MissingDependencyError, match="pip install fugashi unidic-lite"):
        ColBERT.from_pretrained(tiny_checkpoint, device="cpu")


def test_only_multi_batch_encoding_retains_the_heap(tiny_model, monkeypatch):
    entered = []

    @contextlib.contextmanager
    def spy():
        entered.append(1)
        yield

    monkeypatch.setattr(colbert_module, "retained_heap", spy)
    texts = ["京都の紅葉の見頃はいつですか。"] * 5
    tiny_model.encode_documents(texts, batch_size=5)  # one batch: a rerank-sized call
    assert entered == []
    tiny_model.encode_documents(texts, batch_size=2)  # three batches: a collection
    assert entered == [1]
