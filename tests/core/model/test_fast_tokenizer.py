"""FastJapaneseTokenizer must give exactly the slow BertJapaneseTokenizer's ids."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest

pytest.importorskip("fugashi")
pytest.importorskip("unidic_lite")

from transformers import AddedToken, BertJapaneseTokenizer, BertTokenizer  # noqa: E402

from jacolbert_core.model.fast_tokenizer import FastJapaneseTokenizer  # noqa: E402
from jacolbert_core.testing import (  # noqa: E402
    japanese_vocab,
    make_japanese_tokenizer,
    sample_corpus,
    sample_queries,
)

N_RANDOM_TEXTS = 10_000

HIRAGANA = [chr(c) for c in range(0x3041, 0x3097)]
KATAKANA = [chr(c) for c in range(0x30A1, 0x30FB)] + ["ー"]
HALFWIDTH_KATAKANA = [chr(c) for c in range(0xFF66, 0xFF9F)]
COMMON_KANJI = list("日本語東京大学生時間年月人会社国中出上下本見行事自分手気前後長新高安場所")
LOANWORDS = [
    "コンピューター",
    "スマートフォン",
    "インターネット",
    "データベース",
    "アルゴリズム",
    "ヴァイオリン",
    "ウィキペディア",
    "チョコレート",
    "パーティー",
    "ファイル",
]
FULLWIDTH_ASCII = [chr(c) for c in range(0xFF01, 0xFF5F)]
ASCII = [chr(c) for c in range(0x21, 0x7F)]
JA_PUNCT = list("。、「」『』・〜！？（）【】…‥：；〃々〆〇ゝゞ※→")
EMOJI = ["😀", "🎌", "🍣", "👍🏽", "👨‍👩‍👧", "❤️", "🇯🇵", "✨", "☕"]
RARE_CJK = ["𠮷", "𩸽", "𪚲", "鱻", "龘", "麤", "𡈽", "丂", "乛", "䶵"]
COMPAT = ["①", "Ⅻ", "㍻", "㌔", "ﬁ", "ｶﾞ", "ﾊﾟ", "㈱", "²", "½", "™", "Å", "㋿"]
COMBINING = ["e\u0301", "か\u3099", "は\u309a", "a\u0308\u0323", "\u0301", "ｶ\u3099"]
CASED = ["Tokyo", "JAPAN", "iPhone", "ΣΑΣ", "ὈΔΥΣΣΕΎΣ", "İstanbul", "Straße", "ǅ", "ﬀ", "ΑΣ.Β"]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\x0b", "\x0c", "\x1c", "\x1f",
              "\x85", "\u2028", "\u2029", "\u200b", "\u2003", "\ufeff"]  # fmt: skip
SPECIALS = ["[MASK]", "[SEP]", "[CLS]", "[PAD]", "[UNK]", "[unused0]", "[unused1]", "[MASK",
            "MASK]", "[mask]", "［ＭＡＳＫ］", "[[SEP]]", "[MASK][MASK]",
            "[CLS] [SEP]"]  # fmt: skip
EDGE_CASES = [
    "", " ", "\n", "\t", "\u3000", "\u3000\u3000\n\t ", "\r\n\r\n", "\x00", "前\x00後", "。",
    "[MASK]", " [MASK] ", "[SEP]テスト[SEP]", "テスト[CLS]", "[PAD][UNK]", "x" * 101, "x" * 100,
    "ア" * 150, "1" * 120, "ｱ" * 130, "あ" * 200, "😀" * 3, "https://example.com/" + "a" * 120,
    "東京" * 300, "e\u0301" * 60, "ﾃｽﾄ　ﾃｷｽﾄ", "ＡＢＣ１２３", "\u0301先頭の結合文字",
]  # fmt: skip


def _corpus_texts() -> list[str]:
    return [d["text"] for d in sample_corpus()] + [q["query"] for q in sample_queries()]


def _vocab_texts() -> list[str]:
    """Text the test vocabulary is built from: corpus plus kana/ASCII, no emoji or rare CJK."""
    rng = random.Random(7)
    extra = ["".join(rng.choice(HIRAGANA + KATAKANA) for _ in range(40)) for _ in range(50)]
    extra += LOANWORDS + ["".join(ASCII), "".join(JA_PUNCT), "".join(COMMON_KANJI), *CASED]
    return _corpus_texts() + extra


def _segment(rng: random.Random, corpus: list[str]) -> str:
    kind = rng.randrange(16)
    n = rng.randint(1, 12)
    if kind == 0:
        return "".join(rng.choice(HIRAGANA) for _ in range(n))
    if kind == 1:
        return "".join(rng.choice(KATAKANA) for _ in range(n))
    if kind == 2:
        return "".join(rng.choice(COMMON_KANJI) for _ in range(n))
    if kind == 3:
        return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 3)))
    if kind == 4:
        return rng.choice(LOANWORDS)
    if kind == 5:
        return "".join(rng.choice(FULLWIDTH_ASCII + HALFWIDTH_KATAKANA) for _ in range(n))
    if kind == 6:
        return "".join(rng.choice(ASCII) for _ in range(n))
    if kind == 7:
        return str(rng.randint(0, 10 ** rng.randint(1, 12)))
    if kind == 8:
        return "".join(rng.choice(JA_PUNCT) for _ in range(rng.randint(1, 3)))
    if kind == 9:
        return rng.choice(EMOJI + RARE_CJK + COMPAT + COMBINING)
    if kind == 10:
        return rng.choice(CASED)
    if kind == 11:
        return rng.choice(WHITESPACE)
    if kind == 12:
        return rng.choice(SPECIALS)
    if kind == 13:  # a long run, often past max_input_chars_per_word
        return rng.choice(HIRAGANA + KATAKANA + ASCII[:60] + HALFWIDTH_KATAKANA) * rng.randint(
            60, 160
        )
    text = rng.choice(corpus)
    start = rng.randrange(len(text))
    return text[start : start + rng.randint(1, 120)]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    corpus = _corpus_texts()
    texts = list(EDGE_CASES)
    while len(texts) < n:
        roll = rng.random()
        if roll < 0.02:
            texts.append(rng.choice(["", " ", "\n", "\u3000", "\t \n"]))
        elif roll < 0.25:  # passages spliced from the corpus, cut anywhere
            parts = []
            for _ in range(rng.randint(1, 3)):
                text = rng.choice(corpus)
                start = rng.randrange(len(text))
                parts.append(text[start : start + rng.randint(20, 250)])
            texts.append(rng.choice(["", "\n", " ", "\u3000"]).join(parts))
        else:
            parts = [_segment(rng, corpus) for _ in range(rng.randint(1, 10))]
            texts.append(rng.choice(["", "", " ", "\n"]).join(parts))
    return texts


def assert_identical(fast: FastJapaneseTokenizer, slow, texts: list[str]) -> None:
    expected = slow(texts, add_special_tokens=False)["input_ids"]
    got = fast.encode(texts)
    assert len(got) == len(expected)
    bad = [(t, g, e) for t, g, e in zip(texts, got, expected, strict=True) if g != e]
    detail = "\n".join(f"{t!r}\n  fast={g}\n  slow={e}" for t, g, e in bad[:10])
    assert not bad, f"{len(bad)} of {len(texts)} texts differ:\n{detail}"


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ja_tok")
    make_japanese_tokenizer(directory, _vocab_texts())
    return directory


def _japanese(vocab_dir: Path, **kwargs) -> BertJapaneseTokenizer:
    options = {
        "do_lower_case": False,
        "word_tokenizer_type": "mecab",
        "subword_tokenizer_type": "wordpiece",
        "mecab_kwargs": {"mecab_dic": "unidic_lite"},
    }
    options.update(kwargs)
    return BertJapaneseTokenizer(vocab_file=str(vocab_dir / "vocab.txt"), **options)


@pytest.fixture(scope="module")
def slow(vocab_dir: Path) -> BertJapaneseTokenizer:
    return BertJapaneseTokenizer.from_pretrained(vocab_dir)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return random_texts(N_RANDOM_TEXTS)


def test_random_texts_identical(slow, texts):
    assert len(texts) >= N_RANDOM_TEXTS
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=2)
    assert fast is not None
    expected = slow(texts, add_special_tokens=False)["input_ids"]
    assert any(slow.unk_token_id in ids for ids in expected)  # the cases reach [UNK]
    assert any(slow.mask_token_id in ids for ids in expected)  # and literal special tokens
    for threads in (2, 1):  # the threaded (ctypes) MeCab and the fugashi one
        fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=threads)
        got = fast.encode(texts)
        bad = [(t, g, e) for t, g, e in zip(texts, got, expected, strict=True) if g != e]
        detail = "\n".join(f"{t!r}\n  fast={g}\n  slow={e}" for t, g, e in bad[:10])
        assert not bad, f"threads={threads}: {len(bad)} of {len(texts)} differ:\n{detail}"
        assert fast.encode(texts[:200]) == expected[:200]  # warm word cache


def test_wordpiece_matches_python_wordpiece(slow):
    """WordPiece alone, on words MeCab never yields: MeCab groups at most ~24 unknown
    characters, so only here do words pass max_input_chars_per_word (100)."""
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=1)
    rng = random.Random(11)
    alphabet = HIRAGANA + KATAKANA + ASCII + COMMON_KANJI + RARE_CJK + ["##", "[UNK]", "😀"]
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 130))) for _ in range(500)]
    words += ["a" * 100, "a" * 101, "ア" * 100, "ア" * 101, "##", "#", "[UNK]", "[MASK]"]
    for word in words:
        expected = slow.convert_tokens_to_ids(slow.subword_tokenizer.tokenize(word))
        assert fast._wordpiece([word]) == expected, word
    assert fast._wordpiece(words) == [i for w in words for i in fast._wordpiece([w])]


def test_threads_used_for_large_batches(slow):
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=2)
    if fast.num_threads == 1:
        pytest.skip("fugashi's libmecab is not reachable through ctypes here")
    assert_identical(fast, slow, random_texts(300, seed=3))
    fast.close()
    assert_identical(fast, slow, random_texts(300, seed=4))  # restarts its threads


def _dictionary_mappings() -> int:
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        return sum(line.rstrip().endswith("sys.dic") for line in maps)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_threads_share_one_mapping_of_the_dictionary(slow):
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=3)
    if fast.num_threads == 1:
        pytest.skip("fugashi's libmecab is not reachable through ctypes here")
    before = _dictionary_mappings()
    assert_identical(fast, slow, random_texts(300, seed=8))  # 3 workers and this thread
    # each mapping counts the pages it touched in the RSS: one per thread was +90 MB at 5k
    # passages (2 threads)
    assert _dictionary_mappings() == before
    fast.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_threads_survive_fork(slow):
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=2)
    texts = random_texts(200, seed=6)
    expected = slow(texts, add_special_tokens=False)["input_ids"]
    assert fast.encode(texts) == expected  # starts the worker threads
    pid = os.fork()
    if pid == 0:  # the child has no worker threads: they must be started again
        os._exit(0 if fast.encode(texts) == expected else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert fast.encode(texts) == expected


def test_lower_case_and_never_split(vocab_dir, texts):
    slow = _japanese(vocab_dir, do_lower_case=True, never_split=["Tokyo", "JAPAN", "ΣΑΣ"])
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=1)
    assert fast is not None
    cased = [t for t in texts if t != t.lower()][:1500] + ["Tokyo JAPAN tokyo", "ΣΑΣ ΑΣ.Β"]
    assert_identical(fast, slow, cased + texts[:1500])


def test_without_normalisation(vocab_dir, texts):
    slow = _japanese(vocab_dir, mecab_kwargs={"mecab_dic": "unidic_lite", "normalize_text": False})
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=1)
    assert fast is not None
    assert_identical(fast, slow, texts[:1500])


def test_added_tokens(vocab_dir):
    slow = _japanese(vocab_dir)
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=1)
    samples = ["東京タワーと<new>と[MASK]", "<new><new>東京タワー", "東京タ ワー", "<ne w>"]
    assert_identical(fast, slow, samples)
    slow.add_tokens(["東京タワー", "<new>"])  # after the fast tokenizer was built
    assert_identical(fast, slow, samples)
    slow.add_tokens([AddedToken("<strip>", lstrip=True, rstrip=True)])
    assert_identical(fast, slow, samples + ["前 <strip> 後", "<strip>", "a<strip>  b [SEP] c"])
    slow.add_special_tokens({"additional_special_tokens": ["<ctx>"]})
    assert_identical(fast, slow, ["前<ctx>後", "<ctx>", "<CTX>"])


def test_split_special_tokens(vocab_dir):
    slow = _japanese(vocab_dir, split_special_tokens=True)
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=1)
    assert fast is not None
    assert_identical(fast, slow, ["[MASK]です", "a[SEP]b", "[CLS]", ""])


def test_added_token_overriding_a_vocabulary_id(vocab_dir):
    vocab_size = len((vocab_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())
    slow = _japanese(
        vocab_dir, added_tokens_decoder={vocab_size: AddedToken("[UNK]", special=True)}
    )
    assert slow.convert_tokens_to_ids("[UNK]") == vocab_size
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=1)
    assert fast is not None
    assert_identical(fast, slow, ["絵文字😀です", "𠮷野家", "x" * 150, "[UNK]"])


def test_encode_edge_inputs(slow):
    fast = FastJapaneseTokenizer.from_tokenizer(slow)
    assert fast.encode([]) == []
    assert fast.encode(("東京", "")) == slow(["東京", ""], add_special_tokens=False)["input_ids"]
    with pytest.raises(TypeError):
        fast.encode("東京")
    with pytest.raises(TypeError):
        fast.encode([None])


def test_pickle_round_trip(slow):
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=2)
    clone = pickle.loads(pickle.dumps(fast))
    assert clone.num_threads == fast.num_threads
    assert_identical(clone, slow, random_texts(100, seed=5))


def test_rejects_other_tokenizers(tmp_path, vocab_dir):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    assert FastJapaneseTokenizer.from_tokenizer(BertTokenizer(vocab_file=str(vocab))) is None
    assert FastJapaneseTokenizer.from_tokenizer(object()) is None
    basic = _japanese(vocab_dir, word_tokenizer_type="basic")
    assert FastJapaneseTokenizer.from_tokenizer(basic) is None
    chars = _japanese(vocab_dir, subword_tokenizer_type="character")
    assert FastJapaneseTokenizer.from_tokenizer(chars) is None
    nbest = _japanese(vocab_dir, mecab_kwargs={"mecab_dic": "unidic_lite", "mecab_option": "-N2"})
    assert FastJapaneseTokenizer.from_tokenizer(nbest) is None


def test_vocabulary_reaches_test_characters():
    vocab = set(japanese_vocab(_vocab_texts()))
    assert "ア" in vocab and "##ア" in vocab and "😀" not in vocab
