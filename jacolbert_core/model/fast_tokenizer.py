"""A fast, id-identical replacement for ``transformers.BertJapaneseTokenizer`` (MeCab + WordPiece).

Published JaColBERT checkpoints ship only the slow Python tokenizer. For one text it runs:

1. split the text on the literal added/special tokens (``[MASK]``, ``[SEP]``, ...) with the
   tokenizer's trie; those chunks become their ids directly;
2. for every other chunk: NFKC (``normalize_text``), MeCab through fugashi, one ``Node`` object
   per word, ``str.lower`` per surface unless it is in ``never_split`` (``do_lower_case``);
3. per surface: ``str.split()`` (Python whitespace), then greedy longest-match WordPiece in Python
   (``##`` continuation, ``[UNK]`` for a word it cannot cover or longer than
   ``max_input_chars_per_word`` characters);
4. tokens to ids, added tokens first, then the vocabulary.

:class:`FastJapaneseTokenizer` does the same work with fewer Python steps:

* MeCab runs once per chunk with ``-Owakati`` (same dictionary, rc file and options otherwise),
  so all surfaces come back as one space-joined string from C. Splitting that string with
  ``str.split()`` equals splitting every surface with ``str.split()``, because the separator is
  itself whitespace, and lower-casing the joined string equals lower-casing every surface
  (a space has no case and stops ``str.lower``'s final-sigma context, exactly like the end of
  a surface does).
* MeCab is most of what is left (~80%). For batches of 64 texts or more it runs on worker
  threads, each with its own tagger and lattice of one shared MeCab model (one mapping of
  the dictionaries), loaded with fugashi's arguments in the very libmecab fugashi loaded and
  called through ``ctypes``, which releases the GIL. Where that library cannot be found, or
  its output differs from fugashi's on probe texts, MeCab stays on the calling thread.
* WordPiece is a pure function of the word, so its ids are cached per word; a miss is computed
  by the ``tokenizers`` Rust WordPiece model built from the same vocabulary, unknown token,
  ``##`` prefix and ``max_input_chars_per_word``. Ids of vocabulary tokens that an added
  token overrides are remapped, as the slow conversion looks added tokens up first.

Cases that cannot be reproduced cheaply take the tokenizer's own code for that text only:
text containing an added token with ``lstrip``/``rstrip``/``single_word`` set (the whole
text goes through ``tokenizer.tokenize``), a NUL character, or (with ``do_lower_case``) a
cased ``never_split`` token (the word step goes through ``word_tokenizer.tokenize``; WordPiece
stays fast). :meth:`FastJapaneseTokenizer.from_tokenizer` returns ``None`` for any tokenizer
it cannot prove it reproduces, and the caller keeps the slow one.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib
import os
import re
import shlex
import threading
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from typing import Any

__all__ = ["FastJapaneseTokenizer"]

# MeCab options that only choose dictionaries; anything else (output formats, n-best, partial
# parsing, lattice levels...) could make ``-Owakati`` output differ from the node list.
_DICTIONARY_FLAGS = ("-d", "-r", "-u")
_DICTIONARY_LONG_FLAGS = ("--dicdir", "--rcfile", "--userdic")

# Probe texts checked at construction: the wakati tagger must give the slow word step's words.
_PROBES = (
    "",
    "　 \t\n",
    "東京都の天気は晴れ、最高気温は２５度です。",
    "ＡＢＣ株式会社のiPhone15とＰｙｔｈｏｎ3.11、「テスト」・〜ですね！？",
    "改行\nタブ\tと全角　スペース、絵文字😀と𠮷野家、ｶﾀｶﾅ。",
    "[MASK] [SEP] ΣΑΣ İstanbul é e\u0301",
)

_CACHE_LIMIT = 200_000  # words whose WordPiece ids are memoised (cleared when full)
_THREAD_CHUNK = 32  # texts per MeCab work item; batches under two chunks stay serial
_MAX_THREADS = 8


class FastJapaneseTokenizer:
    """MeCab word split + compiled WordPiece, id-identical to a BertJapaneseTokenizer."""

    def __init__(
        self, tokenizer: Any, tagger: Any, model: Any, threads: _MecabThreads | None = None
    ) -> None:
        """Use :meth:`from_tokenizer`, which checks that the parts match ``tokenizer``."""
        self._tokenizer = tokenizer
        # a threaded MeCab parses on the calling thread too, so that one mapping of the
        # dictionaries serves every thread
        self._parse = tagger.parse if threads is None else threads.parse
        self._model = model
        self._pool = threads
        word_tokenizer = tokenizer.word_tokenizer
        self._normalize = bool(word_tokenizer.normalize_text)
        self._lower = bool(word_tokenizer.do_lower_case)
        self._cache: dict[str, list[int]] = {}
        self._signature: tuple | None = None
        self._sync()

    @property
    def num_threads(self) -> int:
        """MeCab worker threads used for large batches (1: the calling thread only)."""
        return 1 if self._pool is None else self._pool.num_threads

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, *, num_threads: int | None = None
    ) -> FastJapaneseTokenizer | None:
        """None when `tokenizer` is not a BertJapaneseTokenizer with MeCab words and WordPiece
        subwords (caller then uses the slow tokenizer).

        ``num_threads`` MeCab workers (default: the usable CPUs, at most 8) parse batches of
        64 texts or more without holding the GIL; 1 keeps all work on the calling thread.
        The fast tokenizer follows tokens added to ``tokenizer`` later; it keeps a reference
        to it and uses its code for the rare texts it does not handle itself.
        """
        try:
            from tokenizers.models import WordPiece
            from transformers import BertJapaneseTokenizer
            from transformers.models.bert_japanese.tokenization_bert_japanese import (
                MecabTokenizer,
                WordpieceTokenizer,
            )
        except ImportError:
            return None
        if not isinstance(tokenizer, BertJapaneseTokenizer):
            return None
        if not _same_pipeline(type(tokenizer), BertJapaneseTokenizer):
            return None
        if not (
            getattr(tokenizer, "do_word_tokenize", False)
            and getattr(tokenizer, "word_tokenizer_type", None) == "mecab"
            and type(getattr(tokenizer, "word_tokenizer", None)) is MecabTokenizer
            and getattr(tokenizer, "do_subword_tokenize", False)
            and getattr(tokenizer, "subword_tokenizer_type", None) == "wordpiece"
            and type(getattr(tokenizer, "subword_tokenizer", None)) is WordpieceTokenizer
            and hasattr(getattr(tokenizer, "tokens_trie", None), "split")
            and hasattr(tokenizer, "_added_tokens_encoder")
            and hasattr(tokenizer, "_added_tokens_decoder")
        ):
            return None

        subword = tokenizer.subword_tokenizer
        vocab = subword.vocab
        unk = subword.unk_token
        if not isinstance(unk, str) or unk not in vocab:
            return None
        if not all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in vocab.items()):
            return None
        if len(set(vocab.values())) != len(vocab):
            return None  # two tokens sharing an id: the Rust model would not round-trip
        max_chars = subword.max_input_chars_per_word
        if type(max_chars) is not int or max_chars < 0:
            return None

        option = _mecab_option(tokenizer.mecab_kwargs or {})
        if option is None:
            return None
        try:
            import fugashi

            tagger = fugashi.GenericTagger(option + " -Owakati")
            if tagger.dictionary_info != tokenizer.word_tokenizer.mecab.dictionary_info:
                return None
            model = WordPiece(
                dict(vocab),
                unk_token=unk,
                max_input_chars_per_word=max_chars,
                continuing_subword_prefix="##",
            )
        except Exception:
            return None

        fast = cls(tokenizer, tagger, model)  # fugashi's wakati tagger, checked first
        for probe in _PROBES:
            if fast._words(probe) != fast._slow_words(probe):
                return None
            if fast.encode([probe]) != tokenizer([probe], add_special_tokens=False)["input_ids"]:
                return None

        threads = _default_threads() if num_threads is None else int(num_threads)
        if threads > 1:
            pool = _mecab_threads(option + " -Owakati", threads)
            try:
                same = pool is not None and all(
                    pool.parse(_nfkc(p)).rstrip() == tagger.parse(_nfkc(p)) for p in _PROBES
                )
            except Exception:
                same = False
            if same:
                fast = cls(tokenizer, tagger, model, pool)
        return fast

    def close(self) -> None:
        """Stop the MeCab worker threads (a later large batch starts them again)."""
        if self._pool is not None:
            self._pool.close()

    def __getstate__(self) -> dict[str, Any]:
        # fugashi taggers, ctypes handles and Rust models do not pickle: rebuild them.
        return {"tokenizer": self._tokenizer, "num_threads": self.num_threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        rebuilt = type(self).from_tokenizer(state["tokenizer"], num_threads=state["num_threads"])
        if rebuilt is None:
            raise RuntimeError("the unpickled tokenizer no longer supports the fast path")
        self.__dict__.update(rebuilt.__dict__)

    # ------------------------------------------------------------------ added tokens

    def _state_signature(self) -> tuple:
        tok = self._tokenizer
        return (
            len(tok._added_tokens_encoder),
            len(tok._added_tokens_decoder),
            len(getattr(tok.tokens_trie, "_tokens", ())),
            bool(getattr(tok, "split_special_tokens", False)),
            tuple(tok.all_special_tokens),
            tuple(self._tokenizer.word_tokenizer.never_split),
        )

    def _sync(self) -> None:
        """(Re)derive everything that depends on the tokenizer's added/special tokens."""
        tok = self._tokenizer
        self._signature = self._state_signature()
        self._cache.clear()
        encoder = dict(tok._added_tokens_encoder)
        special = set(tok.all_special_tokens)
        self._split_special = bool(getattr(tok, "split_special_tokens", False))
        # Chunks the slow tokenizer emits whole, with their ids.
        self._whole_ids = {t: tok.convert_tokens_to_ids(t) for t in set(encoder) | special}
        # WordPiece emits vocabulary tokens, which the slow path converts through the added
        # tokens first: remap the (rare) vocabulary ids an added token overrides.
        vocab = tok.subword_tokenizer.vocab
        self._remap = {vocab[t]: i for t, i in encoder.items() if t in vocab and vocab[t] != i}
        # Only a detector: texts it matches go through the tokenizer's own trie.
        trie_tokens = set(getattr(tok.tokens_trie, "_tokens", ())) | set(encoder) | special
        trie_tokens.discard("")
        self._added_pattern = (
            re.compile("|".join(re.escape(t) for t in sorted(trie_tokens, key=len, reverse=True)))
            if trie_tokens and not self._split_special
            else None
        )
        decoder = tok._added_tokens_decoder
        self._plain_added = all(
            not (
                getattr(t, "lstrip", False)
                or getattr(t, "rstrip", False)
                or getattr(t, "single_word", False)
            )
            for t in decoder.values()
        )
        # With do_lower_case, surfaces in never_split keep their case: texts that could contain
        # one (after normalisation) take the slow word step.
        never_split = set(tok.word_tokenizer.never_split) | special
        self._never_split = never_split
        cased = sorted((t for t in never_split if t and t.lower() != t), key=len, reverse=True)
        self._cased_never_split = (
            re.compile("|".join(re.escape(t) for t in cased)) if self._lower and cased else None
        )

    # ------------------------------------------------------------------ word step

    def _slow_words(self, text: str) -> list[str]:
        """The slow word step (MeCab nodes) followed by WordPiece's whitespace split."""
        surfaces = self._tokenizer.word_tokenizer.tokenize(
            text, never_split=self._tokenizer.all_special_tokens
        )
        return [piece for surface in surfaces for piece in surface.split()]

    def _fast_words(self, text: str, parse: Callable[[str], str]) -> list[str] | None:
        """Words fed to WordPiece for a chunk without added tokens, from one wakati parse;
        None where the slow word step must run instead."""
        if "\x00" in text:
            return None  # MeCab stops at NUL in both paths today; not worth betting on
        if self._normalize:
            text = unicodedata.normalize("NFKC", text)
        if self._lower:
            if self._cased_never_split is not None and self._cased_never_split.search(text):
                return None
            return parse(text).lower().split()
        return parse(text).split()

    def _words(self, text: str) -> list[str]:
        words = self._fast_words(text, self._parse)
        return self._slow_words(text) if words is None else words

    def _word_lists(self, texts: list[str]) -> Iterator[list[str]]:
        """Words of every text, in order; MeCab runs on worker threads for large batches."""
        pool = self._pool
        if pool is None or len(texts) < 2 * _THREAD_CHUNK:
            for text in texts:
                yield self._words(text)
            return
        chunks = (texts[i : i + _THREAD_CHUNK] for i in range(0, len(texts), _THREAD_CHUNK))
        # A bounded number of chunks in flight keeps memory flat on huge inputs.
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(self._chunk_words, chunk)))
            if len(pending) < 4 * pool.num_threads:
                continue
            yield from self._finish(*pending.popleft())
        while pending:
            yield from self._finish(*pending.popleft())

    def _finish(self, chunk: list[str], future: Future) -> Iterator[list[str]]:
        for text, words in zip(chunk, future.result(), strict=True):
            yield self._slow_words(text) if words is None else words

    def _chunk_words(self, chunk: list[str], parse: Callable[[str], str]) -> list:
        fast_words = self._fast_words
        return [fast_words(text, parse) for text in chunk]

    # ------------------------------------------------------------------ WordPiece

    def _wordpiece(self, words: list[str]) -> list[int]:
        cache = self._cache
        pieces = list(map(cache.get, words))
        if None in pieces:
            if len(cache) > _CACHE_LIMIT:
                cache.clear()
            tokenize = self._model.tokenize
            remap = self._remap
            for i, piece in enumerate(pieces):
                if piece is None:
                    word = words[i]
                    ids = [token.id for token in tokenize(word)]
                    if remap:
                        ids = [remap.get(t, t) for t in ids]
                    cache[word] = pieces[i] = ids
        return list(chain.from_iterable(pieces))

    # ------------------------------------------------------------------ public API

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids without special tokens; must equal
        tokenizer(texts, add_special_tokens=False)["input_ids"] for every text."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        if self._state_signature() != self._signature:
            self._sync()
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"expected str, got {type(text).__name__}")
        out: list[list[int]] = [[] for _ in texts]
        pattern = self._added_pattern
        plain = list(range(len(texts)))
        if pattern is not None:
            search = pattern.search
            plain = []
            for i, text in enumerate(texts):
                if search(text):
                    out[i] = self._encode_with_added(text)
                else:
                    plain.append(i)
        wordpiece = self._wordpiece
        word_lists = self._word_lists([texts[i] for i in plain])
        for i, words in zip(plain, word_lists, strict=True):
            out[i] = wordpiece(words)
        return out

    def _encode_with_added(self, text: str) -> list[int]:
        tok = self._tokenizer
        if not self._plain_added:
            return list(tok.convert_tokens_to_ids(tok.tokenize(text)))
        whole = self._whole_ids
        ids: list[int] = []
        for chunk in tok.tokens_trie.split(text):
            if not chunk:
                continue
            if chunk in whole:
                ids.append(whole[chunk])
            else:
                ids.extend(self._wordpiece(self._words(chunk)))
        return ids

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab={len(self._tokenizer.subword_tokenizer.vocab)}, "
            f"lower={self._lower}, normalize={self._normalize})"
        )


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _same_pipeline(cls: type, base: type) -> bool:
    """True when ``cls`` uses ``base``'s tokenization methods (a subclass may override them)."""
    names = (
        "__call__",
        "_encode_plus",
        "tokenize",
        "_tokenize",
        "prepare_for_tokenization",
        "convert_tokens_to_ids",
        "_convert_token_to_id",
        "_convert_token_to_id_with_added_voc",
        "prepare_for_model",
    )
    return all(getattr(cls, n, None) is getattr(base, n, None) for n in names)


def _mecab_option(mecab_kwargs: dict[str, Any]) -> str | None:
    """The option string MecabTokenizer gives fugashi, or None if we cannot vouch for it."""
    mecab_dic = mecab_kwargs.get("mecab_dic", "unidic_lite")
    mecab_option = mecab_kwargs.get("mecab_option") or ""
    if not isinstance(mecab_option, str):
        return None
    try:
        args = shlex.split(mecab_option)
    except ValueError:
        return None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _DICTIONARY_FLAGS or arg in _DICTIONARY_LONG_FLAGS:
            i += 2
            continue
        if arg.startswith(tuple(f + "=" for f in _DICTIONARY_LONG_FLAGS)) or (
            len(arg) > 2 and arg[:2] in _DICTIONARY_FLAGS
        ):
            i += 1
            continue
        return None
    if mecab_dic is None:
        return mecab_option
    modules = {"ipadic": "ipadic", "unidic_lite": "unidic_lite", "unidic": "unidic"}
    if mecab_dic not in modules:
        return None
    try:
        dic_dir = importlib.import_module(modules[mecab_dic]).DICDIR
    except (ImportError, AttributeError):
        return None
    mecabrc = os.path.join(dic_dir, "mecabrc")
    return f'-d "{dic_dir}" -r "{mecabrc}" ' + mecab_option


# ---------------------------------------------------------------------- threaded MeCab


class _CModel:
    """One MeCab model (the dictionaries, memory-mapped once) built exactly like
    ``fugashi.GenericTagger(option)`` builds its tagger: ``["fugashi", "-C",
    *shlex.split(option)]``, in the libmecab that fugashi itself loaded.

    Every :class:`_CTagger` shares it. A tagger of its own per thread (``mecab_new``) maps
    the dictionaries once per thread, and the pages each thread touches count once per
    mapping in the process's RSS: 196 MB of dictionary pages against 84 MB shared, with 2
    threads tokenizing 5k passages."""

    def __init__(self, lib: ctypes.CDLL, args: list[bytes]) -> None:
        self.lib = lib
        argv = (ctypes.c_char_p * len(args))(*args)
        self.handle = lib.mecab_model_new(len(args), argv)
        if not self.handle:
            raise RuntimeError("MeCab failed to load its dictionary")

    def __del__(self) -> None:
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
                self.lib.mecab_model_destroy(handle)


class _CTagger:
    """A tagger and lattice of a shared :class:`_CModel` for one thread, called through
    ctypes, which releases the GIL during the parse; parsing a sentence into the lattice and
    printing it is what ``mecab_sparse_tostr2`` (``GenericTagger.parse``) does."""

    def __init__(self, model: _CModel) -> None:
        self._model = model  # the model must outlive its taggers
        lib = self._lib = model.lib
        self._tagger = lib.mecab_model_new_tagger(model.handle)
        self._lattice = lib.mecab_model_new_lattice(model.handle)
        if not self._tagger or not self._lattice:
            raise RuntimeError("MeCab failed to start")

    def __call__(self, text: str) -> str:
        data = text.encode("utf-8")
        lib, lattice = self._lib, self._lattice
        lib.mecab_lattice_set_sentence2(lattice, data, len(data))
        out = (
            lib.mecab_lattice_tostr(lattice)
            if lib.mecab_parse_lattice(self._tagger, lattice)
            else None
        )
        if out is None:
            raise RuntimeError("MeCab failed to parse a text")
        return out.decode("utf-8")

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
            if getattr(self, "_lattice", None):
                lib.mecab_lattice_destroy(self._lattice)
            if getattr(self, "_tagger", None):
                lib.mecab_destroy(self._tagger)
        self._lattice = self._tagger = None


class _MecabThreads:
    """A thread pool whose workers each own a :class:`_CTagger` (MeCab taggers are not
    thread-safe, their model is); rebuilt after ``fork`` since threads do not survive it."""

    def __init__(self, model: _CModel, num_threads: int) -> None:
        self.model = model
        self.num_threads = num_threads
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = -1

    def tagger(self) -> _CTagger:
        """The calling thread's tagger."""
        tagger = getattr(self._local, "tagger", None)
        if tagger is None:
            tagger = self._local.tagger = _CTagger(self.model)
        return tagger

    def parse(self, text: str) -> str:
        """Parse ``text`` with the calling thread's tagger."""
        return self.tagger()(text)

    def submit(self, fn: Callable[[list[str], Callable[[str], str]], list], chunk: list) -> Future:
        """Run ``fn(chunk, parse)`` on a worker, ``parse`` being that worker's tagger."""
        if self._executor is None or self._pid != os.getpid():
            self._executor = ThreadPoolExecutor(self.num_threads, "jacolbert-mecab")
            self._pid = os.getpid()
        return self._executor.submit(lambda: fn(chunk, self.tagger()))

    def close(self) -> None:
        if self._executor is not None and self._pid == os.getpid():
            self._executor.shutdown(wait=True)
        self._executor = None


def _default_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, cpus))


def _find_libmecab() -> str | None:
    """Path of the libmecab that fugashi's extension module uses, if it can be told."""
    import fugashi

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fugashi.__file__)))
    loaded: set[str] = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.rstrip("\n").split(None, 5)
                if len(parts) == 6 and "libmecab" in os.path.basename(parts[5]):
                    loaded.add(parts[5])
    except OSError:
        pass
    if loaded:
        bundled = {p for p in loaded if p.startswith(package_root + os.sep + "fugashi")}
        chosen = bundled if bundled else loaded
        return next(iter(chosen)) if len(chosen) == 1 else None
    patterns = ("fugashi.libs/libmecab*", "fugashi/.dylibs/libmecab*", "fugashi/libmecab*")
    found = sorted({p for pat in patterns for p in glob.glob(os.path.join(package_root, pat))})
    return found[0] if len(found) == 1 else None


def _mecab_threads(option: str, num_threads: int) -> _MecabThreads | None:
    """A threaded MeCab for ``option``, or None where fugashi's libmecab cannot be reached."""
    path = _find_libmecab()
    if path is None:
        return None
    handle, text, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    signatures = {  # name: (restype, argtypes)
        "mecab_model_new": (handle, [ctypes.c_int, ctypes.POINTER(text)]),
        "mecab_model_destroy": (None, [handle]),
        "mecab_model_new_tagger": (handle, [handle]),
        "mecab_model_new_lattice": (handle, [handle]),
        "mecab_destroy": (None, [handle]),
        "mecab_lattice_destroy": (None, [handle]),
        "mecab_lattice_set_sentence2": (None, [handle, text, size]),
        "mecab_parse_lattice": (ctypes.c_int, [handle, handle]),
        "mecab_lattice_tostr": (text, [handle]),
    }
    try:
        lib = ctypes.CDLL(path)
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        args = [b"fugashi", b"-C"] + [arg.encode("utf-8") for arg in shlex.split(option)]
        return _MecabThreads(_CModel(lib, args), num_threads)
    except (OSError, AttributeError, RuntimeError):
        return None
