"""Japanese-aware chunking: sentence splitting, token budgets, overlap and offsets."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jacolbert_core.testing import make_japanese_tokenizer, sample_corpus
from jacolbert_core.text.chunking import Chunk, ChunkingConfig, chunk_text, split_sentences

# --------------------------------------------------------------------------- counters


def char_tokens(texts: list[str]) -> list[int]:
    """One token per character (whitespace included)."""
    return [len(t) for t in texts]


def word_tokens(texts: list[str]) -> list[int]:
    """One token per whitespace-separated word."""
    return [len(t.split()) for t in texts]


def lumpy_tokens(texts: list[str]) -> list[int]:
    """Superadditive (a whole counts more than its parts), so estimates from sentence counts
    are too low and the chunker must notice and shrink passages."""
    return [len(t) + len(t) // 7 for t in texts]


class CallCounter:
    def __init__(self, counter):
        self.counter = counter
        self.calls = 0
        self.texts = 0

    def __call__(self, texts: list[str]) -> list[int]:
        self.calls += 1
        self.texts += len(texts)
        return self.counter(texts)


@pytest.fixture(scope="module")
def model_tokens(tmp_path_factory: pytest.TempPathFactory):
    """Token counts from the tiny BertJapaneseTokenizer (MeCab + WordPiece), no specials."""
    tokenizer = make_japanese_tokenizer(tmp_path_factory.mktemp("chunking-tokenizer"))

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    return count


LONG_DOCS = sorted((d["text"] for d in sample_corpus()), key=len)[-3:]


# --------------------------------------------------------------------------- invariants


def assert_chunk_invariants(doc: str, chunks: list[Chunk], count, config: ChunkingConfig) -> None:
    assert chunks, "at least one chunk"
    for c in chunks:
        assert doc[c.start : c.end] == c.text
        assert c.text == c.text.strip() and c.text
    # within budget, counted as whole passages
    counts = count([c.text for c in chunks])
    assert max(counts) <= config.max_tokens, (counts, config)
    # order preserved; each chunk brings new text and never repeats a whole chunk
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start and a.end < b.end
        assert b.start > a.start  # overlap is a proper suffix of the previous chunk
    # full coverage of non-whitespace characters
    covered = bytearray(len(doc))
    for c in chunks:
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    missing = [i for i, ch in enumerate(doc) if not ch.isspace() and not covered[i]]
    assert not missing, f"uncovered characters at {missing[:10]}"


def overlaps(chunks: list[Chunk]) -> list[int]:
    """Characters shared by each consecutive pair (0 where they do not overlap)."""
    return [max(0, a.end - b.start) for a, b in zip(chunks, chunks[1:], strict=False)]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_tokens": 7}, "max_tokens must be at least 8"),
        ({"max_tokens": 0}, "max_tokens must be at least 8"),
        ({"overlap_tokens": -1}, "overlap_tokens must be >= 0"),
        ({"max_tokens": 16, "overlap_tokens": 16}, "smaller than max_tokens"),
        ({"max_tokens": 16.5}, "must be an int"),
        ({"max_tokens": True}, "must be an int"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChunkingConfig(**kwargs)


def test_config_defaults():
    config = ChunkingConfig()
    assert (config.max_tokens, config.overlap_tokens, config.enabled) == (256, 32, True)
    ChunkingConfig(max_tokens=8, overlap_tokens=7)  # the tightest valid setting


# --------------------------------------------------------------------------- sentences


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def test_split_at_japanese_terminators():
    text = "今日は晴れです。明日は雨ですか？そうです！本当に?ええ!最後の文．次の文｡終わり"
    assert sentences(text) == [
        "今日は晴れです。",
        "明日は雨ですか？",
        "そうです！",
        "本当に?",
        "ええ!",
        "最後の文．",
        "次の文｡",
        "終わり",
    ]


def test_split_keeps_runs_of_marks_together():
    assert sentences("え？！本当？？はい。。。次") == ["え？！", "本当？？", "はい。。。", "次"]


def test_quotes_stay_with_their_sentence():
    text = "彼は「もう帰ります。また明日。」と言った。「はい。」「わかりました！」次の日。"
    assert sentences(text) == [
        "彼は「もう帰ります。また明日。」と言った。",
        "「はい。」",
        "「わかりました！」",
        "次の日。",
    ]
    # a closing bracket after the terminator belongs to the sentence
    assert sentences("（詳しくは後述。）次に進む。") == ["（詳しくは後述。）", "次に進む。"]
    # nested quotes
    assert sentences("「彼は『はい。』と答えた。」翌日。") == [
        "「彼は『はい。』と答えた。」",
        "翌日。",
    ]


def test_unbalanced_brackets_do_not_swallow_text():
    assert sentences("「閉じない引用。次の文。さらに次。") == [
        "「閉じない引用。",
        "次の文。",
        "さらに次。",
    ]
    assert sentences("1) 最初の項目。2) 次の項目。") == ["1) 最初の項目。", "2) 次の項目。"]


def test_continuations_after_quotes_and_marks():
    assert sentences("「うん。」って言った。すごい！と思った。バージョン２．５です。") == [
        "「うん。」って言った。",
        "すごい！と思った。",
        "バージョン２．５です。",
    ]


def test_ascii_periods_inside_tokens_do_not_split():
    text = "Python 3.11 を python.org から入手します。e.g. this works. 次へ"
    assert sentences(text) == [
        "Python 3.11 を python.org から入手します。",
        "e.g.",
        "this works.",
        "次へ",
    ]


def test_line_breaks_split_and_whitespace_is_dropped():
    text = "  見出し\n本文の一行目\r\n本文の二行目。続き\n\n\u3000新しい段落\n \n\t"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == [
        "見出し",
        "本文の一行目",
        "本文の二行目。",
        "続き",
        "新しい段落",
    ]
    assert split_sentences("") == []
    assert split_sentences(" \n\u3000\t ") == []


def test_split_sentences_loses_nothing():
    doc = LONG_DOCS[0]
    spans = split_sentences(doc)
    rebuilt = []
    previous = 0
    for s, e in spans:
        assert previous <= s < e
        assert doc[previous:s].strip() == ""
        rebuilt.append(doc[s:e])
        previous = e
    assert doc[previous:].strip() == ""
    assert re.sub(r"\s", "", "".join(rebuilt)) == re.sub(r"\s", "", doc)


# --------------------------------------------------------------------------- chunking basics


def test_text_that_fits_is_one_chunk_with_offsets():
    doc = "\n  京都の紅葉は十一月が見頃です。東福寺が人気です。 \n"
    counter = CallCounter(char_tokens)
    chunks = chunk_text(doc, counter, ChunkingConfig(max_tokens=64, overlap_tokens=8))
    assert chunks == [Chunk(doc.strip(), 3, 3 + len(doc.strip()))]
    assert counter.calls == 1  # one batched count for a short text


def test_disabled_returns_whole_text():
    doc = " 長い文書です。" * 100
    chunks = chunk_text(
        doc, char_tokens, ChunkingConfig(max_tokens=16, overlap_tokens=4, enabled=False)
    )
    assert chunks == [Chunk(doc.strip(), 1, len(doc))]


@pytest.mark.parametrize("doc", ["", "   ", "\n\u3000\t"])
def test_empty_text_raises(doc):
    with pytest.raises(ValueError, match="empty or whitespace-only"):
        chunk_text(doc, char_tokens)
    with pytest.raises(ValueError, match="empty or whitespace-only"):
        chunk_text(doc, char_tokens, ChunkingConfig(enabled=False))


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="text must be a string"):
        chunk_text(b"bytes", char_tokens)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ChunkingConfig"):
        chunk_text("文。", char_tokens, {"max_tokens": 8})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one count per input text"):
        chunk_text("文。" * 50, lambda texts: [100], ChunkingConfig(max_tokens=8, overlap_tokens=0))


def make_doc(n_sentences: int = 40) -> str:
    rng = [3, 7, 11, 5, 9, 13, 4, 8]
    parts = []
    for i in range(n_sentences):
        body = "あいうえおかきくけこさしすせそ"[: rng[i % len(rng)]]
        parts.append(f"文{i}{body}。")
        if i % 10 == 9:
            parts.append("\n\n")
    return "".join(parts)


def test_sentence_boundaries_respected_when_sentences_fit():
    doc = make_doc()
    config = ChunkingConfig(max_tokens=40, overlap_tokens=0)
    chunks = chunk_text(doc, char_tokens, config)
    assert len(chunks) > 3
    assert_chunk_invariants(doc, chunks, char_tokens, config)
    starts = {s for s, _ in split_sentences(doc)}
    ends = {e for _, e in split_sentences(doc)}
    for c in chunks:
        assert c.start in starts and c.end in ends
    assert overlaps(chunks) == [0] * (len(chunks) - 1)


def test_greedy_packing_fills_the_budget():
    doc = "これは十文字の文です。" * 30  # 11 characters per sentence
    config = ChunkingConfig(max_tokens=60, overlap_tokens=0)
    chunks = chunk_text(doc, char_tokens, config)
    assert [len(c.text) for c in chunks] == [55] * 6


def test_paragraph_break_is_preferred():
    para1 = "段落一の文です。" * 4  # 32 characters
    para2 = "段落二の文です。" * 4
    doc = para1 + "\n\n" + para2
    chunks = chunk_text(doc, char_tokens, ChunkingConfig(max_tokens=48, overlap_tokens=0))
    # greedy would stop after 5 sentences; the blank line is a better place to end
    assert [c.text for c in chunks] == [para1, para2]


def test_overlap_is_whole_trailing_sentences_and_bounded():
    doc = make_doc()
    config = ChunkingConfig(max_tokens=60, overlap_tokens=20)
    chunks = chunk_text(doc, char_tokens, config)
    assert_chunk_invariants(doc, chunks, char_tokens, config)
    starts = {s for s, _ in split_sentences(doc)}
    shared = overlaps(chunks)
    assert all(0 < n <= config.overlap_tokens for n in shared), shared
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start in starts  # whole sentences
        assert a.text.endswith(doc[b.start : a.end])


def test_overlap_of_a_long_sentence_is_its_tail():
    sentence = "とても長い文で、読点で区切られた、短い結びです。"
    doc = sentence * 6
    config = ChunkingConfig(max_tokens=80, overlap_tokens=12)
    chunks = chunk_text(doc, char_tokens, config)
    assert_chunk_invariants(doc, chunks, char_tokens, config)
    assert all(0 < n <= 12 for n in overlaps(chunks))
    # the tail starts after a 読点 when one is close enough
    for b in chunks[1:]:
        assert doc[b.start - 1] in "、。"


def test_no_overlap_when_zero():
    doc = make_doc()
    chunks = chunk_text(doc, char_tokens, ChunkingConfig(max_tokens=30, overlap_tokens=0))
    assert all(n == 0 for n in overlaps(chunks))


@pytest.mark.parametrize("overlap", [0, 5])
def test_quotes_are_not_cut_when_the_sentence_fits(overlap):
    quote = "「今日はいい天気ですね。散歩に行きましょう。」と彼女は言った。"
    doc = ("前置きの文です。" + quote) * 8
    config = ChunkingConfig(max_tokens=len(quote) + 10, overlap_tokens=overlap)
    chunks = chunk_text(doc, char_tokens, config)
    assert_chunk_invariants(doc, chunks, char_tokens, config)
    for m in re.finditer(re.escape(quote), doc):
        # every quote lies wholly inside some chunk, and no chunk ends inside it
        assert any(c.start <= m.start() and m.end() <= c.end for c in chunks)
        for c in chunks:
            assert not (m.start() < c.end < m.end())
            if overlap == 0:  # (with overlap, a passage may start with the tail of one)
                assert not (m.start() < c.start < m.end())


def test_long_sentence_splits_at_commas_first():
    clause = "これは読点で区切られた節です、"
    doc = clause * 20 + "終わり。"
    config = ChunkingConfig(max_tokens=50, overlap_tokens=0)
    chunks = chunk_text(doc, char_tokens, config)
    assert_chunk_invariants(doc, chunks, char_tokens, config)
    assert all(c.text.endswith("、") for c in chunks[:-1])
    assert all(len(c.text) == 3 * len(clause) for c in chunks[:-1])


def test_unpunctuated_sentence_is_split_within_budget_efficiently():
    doc = "あ" * 2000
    counter = CallCounter(char_tokens)
    config = ChunkingConfig(max_tokens=256, overlap_tokens=32)
    chunks = chunk_text(doc, counter, config)
    assert_chunk_invariants(doc, chunks, char_tokens, config)
    # pieces leave room for the overlap, so consecutive chunks still overlap
    assert all(n > 0 for n in overlaps(chunks))
    # O(log n) counting calls per cut, not one per character
    assert counter.calls <= 4 + len(chunks) * 2 * math.ceil(math.log2(2000))
    assert counter.texts < 2000


def test_word_counter_with_spaced_text():
    words = [f"word{i}" for i in range(300)]
    doc = " ".join(words)  # one long "sentence" with no terminators
    config = ChunkingConfig(max_tokens=20, overlap_tokens=5)
    chunks = chunk_text(doc, word_tokens, config)
    assert_chunk_invariants(doc, chunks, word_tokens, config)
    for c in chunks:  # cut at spaces, never inside a word
        assert re.fullmatch(r"word\d+( word\d+)*", c.text)
    assert all(
        0 < len(doc[b.start : a.end].split()) <= 5 for a, b in zip(chunks, chunks[1:], strict=False)
    )


def test_superadditive_counter_is_respected():
    doc = make_doc(60)
    config = ChunkingConfig(max_tokens=40, overlap_tokens=10)
    chunks = chunk_text(doc, lumpy_tokens, config)
    assert_chunk_invariants(doc, chunks, lumpy_tokens, config)


def test_a_single_character_over_budget_still_terminates():
    def huge(texts):
        return [100 * len(t) for t in texts]

    chunks = chunk_text("あいう。えお", huge, ChunkingConfig(max_tokens=8, overlap_tokens=0))
    assert [c.text for c in chunks] == ["あ", "い", "う", "。", "え", "お"]


def test_tight_config_terminates():
    doc = make_doc(30)
    config = ChunkingConfig(max_tokens=8, overlap_tokens=7)
    chunks = chunk_text(doc, char_tokens, config)
    assert_chunk_invariants(doc, chunks, char_tokens, config)


def test_deterministic():
    doc = LONG_DOCS[-1]
    config = ChunkingConfig(max_tokens=50, overlap_tokens=10)
    assert chunk_text(doc, char_tokens, config) == chunk_text(doc, char_tokens, config)


# --------------------------------------------------------------------------- real tokenizer


@pytest.mark.parametrize("max_tokens, overlap", [(32, 8), (64, 16), (128, 32)])
@pytest.mark.parametrize("doc_index", [0, 1, 2])
def test_sample_passages_with_model_tokenizer(model_tokens, doc_index, max_tokens, overlap):
    doc = LONG_DOCS[doc_index]
    config = ChunkingConfig(max_tokens=max_tokens, overlap_tokens=overlap)
    chunks = chunk_text(doc, model_tokens, config)
    assert len(chunks) > 1
    assert_chunk_invariants(doc, chunks, model_tokens, config)
    shared = overlaps(chunks)
    assert sum(n > 0 for n in shared) >= len(shared) // 2  # overlap is the norm
    for a, b in zip(chunks, chunks[1:], strict=False):
        if a.end > b.start:  # about overlap_tokens, never most of a passage
            assert model_tokens([doc[b.start : a.end]])[0] <= 2 * overlap
    # passages end at sentence ends whenever sentences fit the budget
    sentence_tokens = model_tokens([doc[s:e] for s, e in split_sentences(doc)])
    if max(sentence_tokens) <= max_tokens:
        ends = {e for _, e in split_sentences(doc)}
        assert all(c.end in ends for c in chunks)


def test_short_passage_with_model_tokenizer_is_whole(model_tokens):
    doc = sample_corpus()[0]["text"]
    assert chunk_text(doc, model_tokens, ChunkingConfig(max_tokens=200)) == [
        Chunk(doc, 0, len(doc))
    ]


def test_unpunctuated_text_with_model_tokenizer(model_tokens):
    doc = "東京都の天気は晴れで最高気温は二十五度ですが夜には雨が降るでしょう" * 60
    config = ChunkingConfig(max_tokens=64, overlap_tokens=16)
    counter = CallCounter(model_tokens)
    chunks = chunk_text(doc, counter, config)
    assert_chunk_invariants(doc, chunks, model_tokens, config)
    assert counter.calls <= 4 + len(chunks) * 2 * math.ceil(math.log2(len(doc)))


# --------------------------------------------------------------------------- properties

ALPHABET = list(
    "あいうえおかきくけこんー漢字東京都アイウカナ"
    "。、！？!?.,．｡「」『』（）()[]"
    " \n\u3000\t"
    "abcXYZ019"
)
japaneseish = st.text(alphabet=st.sampled_from(ALPHABET), min_size=1, max_size=400).filter(
    lambda s: s.strip()
)
configs = st.integers(min_value=8, max_value=80).flatmap(
    lambda m: st.builds(ChunkingConfig, max_tokens=st.just(m), overlap_tokens=st.integers(0, m - 1))
)
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(text=st.text(alphabet=st.sampled_from(ALPHABET), max_size=300))
def test_split_sentences_properties(text):
    previous = 0
    for s, e in split_sentences(text):
        assert previous <= s < e <= len(text)
        assert text[previous:s].strip() == ""  # only whitespace between spans
        assert text[s:e] == text[s:e].strip()
        previous = e
    assert text[previous:].strip() == ""


@PROPERTY_SETTINGS
@given(text=japaneseish, config=configs)
def test_chunk_invariants_char_counter(text, config):
    chunks = chunk_text(text, char_tokens, config)
    assert_chunk_invariants(text, chunks, char_tokens, config)
    for n in overlaps(chunks):
        assert n <= config.overlap_tokens
    if len(text.strip()) <= config.max_tokens:
        assert len(chunks) == 1


@PROPERTY_SETTINGS
@given(text=japaneseish, config=configs)
def test_chunk_invariants_word_counter(text, config):
    if not word_tokens([text])[0]:
        return
    chunks = chunk_text(text, word_tokens, config)
    assert_chunk_invariants(text, chunks, word_tokens, config)


@PROPERTY_SETTINGS
@given(text=japaneseish, config=configs)
def test_chunk_invariants_superadditive_counter(text, config):
    chunks = chunk_text(text, lumpy_tokens, config)
    assert_chunk_invariants(text, chunks, lumpy_tokens, config)
