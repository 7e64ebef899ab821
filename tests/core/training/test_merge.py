"""Checkpoint merging: the element-wise (weighted) mean, refused for incompatible models."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jacolbert_core import ColBERT
from jacolbert_core.testing import make_tiny_checkpoint
from jacolbert_core.training.cli_commands_train import register
from jacolbert_core.training.merge import MergeError, merge_checkpoints, merge_models


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    return make_tiny_checkpoint(root / "a", seed=0), make_tiny_checkpoint(root / "b", seed=1)


def test_merge_of_two_is_the_element_wise_mean_and_encodes(pair, tmp_path):
    a, b = pair
    out = merge_checkpoints([a, b], tmp_path / "m")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    merged = load_file(str(out / "model.safetensors"))
    assert set(merged) == set(wa)
    for key, tensor in merged.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (wa[key] + wb[key]) / 2, rtol=0, atol=1e-7)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["HF_ColBERT"]
    assert json.loads((out / "artifact.metadata").read_text()) == json.loads(
        (a / "artifact.metadata").read_text()
    ) | {"jacolbert_query_length": "fixed"}
    model = ColBERT.from_pretrained(out, device="cpu")
    [vectors] = model.encode_documents(["京都の紅葉は十一月が見頃です。"])
    assert vectors.shape[1] == 32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    scores = model.score("紅葉の見頃", ["京都の紅葉は十一月が見頃です。", "返品は八日以内です。"])
    assert np.isfinite(scores).all()


def test_weighted_merge_and_in_memory_merge_agree(pair, tmp_path):
    a, b = pair
    out = merge_checkpoints([a, b, a], tmp_path / "w", weights=[0.5, 0.3, 0.2])
    merged = load_file(str(out / "model.safetensors"))
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    key = "linear.weight"
    torch.testing.assert_close(merged[key], 0.7 * wa[key] + 0.3 * wb[key], rtol=0, atol=1e-6)
    models = [ColBERT.from_pretrained(p, device="cpu") for p in (a, b)]
    in_memory = merge_models(models, weights=[7, 3])  # normalised to 0.7 / 0.3
    torch.testing.assert_close(in_memory.linear.weight.detach(), merged[key], rtol=0, atol=1e-6)


def test_incompatible_checkpoints_are_refused_with_the_key(pair, tmp_path):
    a, _ = pair
    wider = make_tiny_checkpoint(tmp_path / "wide", hidden_size=96, num_heads=2, seed=0)
    with pytest.raises(MergeError, match="hidden_size"):
        merge_checkpoints([a, wider], tmp_path / "x")
    other_dim = make_tiny_checkpoint(tmp_path / "dim", dim=16, seed=0)
    with pytest.raises(MergeError, match="'dim'"):
        merge_checkpoints([a, other_dim], tmp_path / "x")
    other_vocab = make_tiny_checkpoint(tmp_path / "vocab", texts=["全く別の語彙です。"], seed=0)
    with pytest.raises(MergeError, match="vocab"):
        merge_checkpoints([a, other_vocab], tmp_path / "x")
    deeper = make_tiny_checkpoint(tmp_path / "deep", num_layers=3, seed=0)
    with pytest.raises(MergeError, match="num_hidden_layers"):
        merge_checkpoints([a, deeper], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_shape_mismatch_names_the_first_key(pair):
    a, b = pair
    first, second = (ColBERT.from_pretrained(p, device="cpu") for p in (a, b))
    second.linear = torch.nn.Linear(64, 16, bias=False)
    with pytest.raises(MergeError, match="key 'linear.weight' has shape"):
        merge_models([first, second], names=["A", "B"])


def test_bad_weights_and_arguments(pair, tmp_path):
    a, b = pair
    with pytest.raises(MergeError, match="2 weights given for 3"):
        merge_checkpoints([a, b, a], tmp_path / "x", weights=[1, 1])
    with pytest.raises(MergeError, match="non-negative"):
        merge_checkpoints([a, b], tmp_path / "x", weights=[1, -1])
    with pytest.raises(MergeError, match="at least two"):
        merge_checkpoints([a], tmp_path / "x")
    with pytest.raises(MergeError, match="one of the inputs"):
        merge_checkpoints([a, b], a)


def test_merge_command(pair, tmp_path, capsys):
    a, b = pair
    parser = argparse.ArgumentParser(prog="jacolbert")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(
        ["merge", str(a), str(b), "--out", str(tmp_path / "m"), "--weights", "1", "3"]
    )
    assert args.run(args) == 0
    assert "merged 2 checkpoints" in capsys.readouterr().out
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(merged[key], 0.25 * wa[key] + 0.75 * wb[key], rtol=0, atol=1e-6)
