"""The CLI end to end with the tiny checkpoint: the README's main job, offline."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from jacolbert_core.cli import main

SAMPLE = Path(str(resources.files("jacolbert_core.data").joinpath("sample_ja.jsonl")))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    assert main(["tiny-model", str(root / "model"), "--seed", "5"]) == 0
    assert (
        main(["index", str(SAMPLE), "--index", str(root / "idx"), "--model", str(root / "model")])
        == 0
    )
    return root / "model", root / "idx"


def test_index_and_search_table(built, capsys):
    _, index = built
    capsys.readouterr()
    assert main(["search", str(index), "京都の紅葉の見頃は？", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "Query: 京都の紅葉の見頃は？" in out and "rank" in out and "passage" in out
    assert (
        len([line for line in out.splitlines() if line.strip().startswith(("1 ", "2 ", "3 "))]) == 3
    )


def test_search_json_and_where(built, capsys):
    _, index = built
    capsys.readouterr()
    where = json.dumps({"topic": "food"})
    assert main(["search", str(index), "味噌汁", "-k", "4", "--where", where, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["query"] == "味噌汁" and len(payload["hits"]) == 4
    assert all(hit["metadata"]["topic"] == "food" for hit in payload["hits"])
    assert [hit["rank"] for hit in payload["hits"]] == [1, 2, 3, 4]


def test_add_delete_compact_info(built, tmp_path, capsys):
    model, index = built
    extra = tmp_path / "extra.tsv"
    extra.write_text("id\ttext\ttopic\nnew-1\t新しく追加した文書です。\tmisc\n", encoding="utf-8")
    assert main(["add", str(extra), "--index", str(index)]) == 0
    assert main(["delete", str(index), "new-1", "unknown"]) == 0
    assert "deleted 1 of 2" in capsys.readouterr().out
    assert main(["compact", str(index)]) == 0
    capsys.readouterr()
    assert main(["info", str(index), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 48 and stats["segments"] == 1


def test_folder_input_and_rerank(built, tmp_path, capsys):
    model, _ = built
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("返品は八日以内に受け付けます。", encoding="utf-8")
    (folder / "sub" / "b.md").write_text("京都の紅葉は十一月が見頃です。", encoding="utf-8")
    assert main(["index", str(folder), "--index", str(tmp_path / "f"), "--model", str(model)]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "f"), "返品", "--json"]) == 0
    ids = {hit["document_id"] for hit in json.loads(capsys.readouterr().out)["hits"]}
    assert ids == {"a.txt", "sub/b.md"}
    assert main(["rerank", "返品", str(SAMPLE), "-k", "2", "--model", str(model), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["score"] >= rows[1]["score"]


def test_errors_exit_with_a_message(tmp_path, capsys):
    assert main(["search", str(tmp_path / "missing"), "質問"]) == 2
    assert "no index at" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n', encoding="utf-8")
    assert main(["index", str(bad), "--index", str(tmp_path / "i"), "--model", str(tmp_path)]) == 2
    assert "text" in capsys.readouterr().err
