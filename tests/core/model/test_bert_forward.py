"""The lean BERT inference forward equals transformers' own, and only replaces it at inference."""

from __future__ import annotations

import pytest
import torch

from jacolbert_core import ColBERT
from jacolbert_core.model import colbert as colbert_module
from jacolbert_core.model.bert_forward import bert_forward, supports


def _batches(model: ColBERT, corpus: list[dict]) -> dict:
    texts = [doc["text"] for doc in corpus[:6]]
    documents = model.tokenizer.pad_documents(model.tokenizer.document_ids(texts))
    queries = model.tokenizer.queries(["京都の紅葉", "東京駅から一番近い美術館はどこですか", "短"])
    assert not bool(documents.attention_mask.all())  # padding inside the batch
    assert not bool(queries.attention_mask.all())  # [MASK] positions not attended to
    return {"documents": documents, "queries": queries}


@pytest.mark.parametrize("quantize", [False, True])
def test_hidden_states_equal_the_transformers_forward(tiny_checkpoint, corpus, quantize):
    model = ColBERT.from_pretrained(tiny_checkpoint, device="cpu", quantize=quantize)
    assert supports(model.backbone) and model.lean_inference
    with torch.inference_mode():
        for name, batch in _batches(model, corpus).items():
            ids, mask = batch.input_ids, batch.attention_mask
            expected = model.backbone(input_ids=ids, attention_mask=mask)[0]
            assert torch.equal(bert_forward(model.backbone, ids, mask), expected), name
            for row in range(len(ids)):  # alone, without the batch's padding
                one_ids, one_mask = ids[row : row + 1], mask[row : row + 1]
                alone = model.backbone(input_ids=one_ids, attention_mask=one_mask)[0]
                assert torch.equal(bert_forward(model.backbone, one_ids, one_mask), alone)


def test_only_inference_takes_the_lean_path(tiny_model, monkeypatch):
    calls = []

    def counting(*args):
        calls.append(1)
        return bert_forward(*args)

    monkeypatch.setattr(colbert_module, "bert_forward", counting)
    expected = tiny_model.encode_queries(["京都の紅葉"])[0]
    assert len(calls) == 1
    batch = tiny_model.tokenizer.queries(["京都の紅葉"])
    try:
        with torch.enable_grad():  # training: transformers' forward, gradients flow
            vectors = tiny_model.query_vectors(batch)
            vectors.sum().backward()
        assert tiny_model.linear.weight.grad is not None
        tiny_model.train()  # dropout on, even without gradients
        with torch.inference_mode():
            tiny_model.query_vectors(batch)
    finally:
        tiny_model.eval().zero_grad(set_to_none=True)
    assert len(calls) == 1
    torch.testing.assert_close(vectors[0, : len(expected)].detach().numpy(), expected)


def _bert(model: ColBERT, attention: str = "sdpa", **changes):
    from transformers import BertModel

    config = type(model.backbone.config)(**{**model.backbone.config.to_dict(), **changes})
    config._attn_implementation = attention
    return BertModel(config).eval()


def test_other_backbones_use_their_own_forward(tiny_model, monkeypatch):
    assert supports(_bert(tiny_model))
    assert not supports(_bert(tiny_model, "eager"))
    assert not supports(_bert(tiny_model, is_decoder=True))
    assert not supports(torch.nn.Linear(2, 2))  # not a BertModel (no config either)
    model = ColBERT(_bert(tiny_model, "eager"), tiny_model.linear, tiny_model.tokenizer)
    assert not model.lean_inference
    monkeypatch.setattr(colbert_module, "bert_forward", None)  # would fail if called
    assert model.encode_queries(["京都の紅葉"])[0].shape[1] == tiny_model.config.dim
