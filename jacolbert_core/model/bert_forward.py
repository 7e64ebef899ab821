"""BERT's forward pass for inference, without transformers' per-call machinery.

Each call of a transformers 5 ``BertModel`` goes through output-capturing and deprecation
wrappers, signature inspection, an attention-mask builder and ``ModelOutput`` objects: ~0.6 ms a
call on 2 cores, more than the arithmetic of a 2-layer model's query (1.1 -> 0.5 ms per
``backbone`` call) and ~3 ms (6%) of a 12-layer bert-base query. :func:`bert_forward` calls the
model's own submodules (so int8-quantised linear layers work too) in the same order, with the
same operands: its hidden states are bit-identical to ``backbone(...)[0]`` (tested).

It covers what JaColBERT checkpoints are, an encoder-only ``BertModel`` with absolute positions
and SDPA attention (:func:`supports`), and only inference: :class:`ColBERT` sends training
(gradients or dropout) and every other backbone through the model's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supports(backbone: torch.nn.Module) -> bool:
    """True for a ``BertModel`` that :func:`bert_forward` reproduces exactly."""
    from transformers import BertModel

    if type(backbone) is not BertModel:
        return False
    config = backbone.config
    return (
        getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not config.is_decoder
        and not getattr(config, "add_cross_attention", False)
        and config._attn_implementation == "sdpa"
    )


def bert_forward(
    backbone: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Last hidden states ``[batch, length, hidden]`` of a supported ``BertModel`` in eval mode;
    ``attention_mask`` is 1 where a position may be attended to."""
    embeddings = backbone.embeddings
    n = input_ids.shape[1]
    x = embeddings.word_embeddings(input_ids) + embeddings.token_type_embeddings.weight[0]
    x = embeddings.LayerNorm(x + embeddings.position_embeddings.weight[:n])
    mask = attention_mask[:, None, None, :].bool()
    for layer in backbone.encoder.layer:
        attention = layer.attention.self
        heads = (*input_ids.shape, -1, attention.attention_head_size)
        query, key, value = (
            projection(x).view(heads).transpose(1, 2)
            for projection in (attention.query, attention.key, attention.value)
        )
        scale = attention.attention_head_size**-0.5
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
        context = context.transpose(1, 2).reshape(x.shape[0], n, -1)
        output = layer.attention.output
        x = output.LayerNorm(output.dense(context) + x)
        intermediate = layer.intermediate
        hidden = intermediate.intermediate_act_fn(intermediate.dense(x))
        x = layer.output.LayerNorm(layer.output.dense(hidden) + x)
    return x
