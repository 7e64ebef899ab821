"""Japanese-aware chunking of long documents into passages sized in the model's own tokens.

A document is first cut into sentences (after 。．！？!? and their width variants, after the
closing quotes and brackets that follow them, and at line breaks; a blank line is a stronger
break). Consecutive sentences are packed greedily up to ``max_tokens`` tokens as counted by
the caller's tokenizer; a sentence that is too long on its own is cut further at 、，,
then at spaces, then at character boundaries found by a search on token counts. Each passage
after the first repeats about ``overlap_tokens`` tokens of trailing sentences of the previous
one, so a fact that straddles a boundary is whole in at least one passage.

Every :class:`Chunk` keeps character offsets into the original string
(``document[chunk.start:chunk.end] == chunk.text``), so a search hit can point back into its
source. Token counts are never assumed to add up across sentences: every passage is counted
as a whole before it is returned, and shrunk if the tokenizer disagrees with the estimate.
"""

from __future__ import annotations

import math
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["Chunk", "ChunkingConfig", "TokenCounter", "chunk_text", "split_sentences"]

TokenCounter = Callable[[list[str]], Sequence[int]]
"""Takes a batch of strings, returns each one's token count (no special tokens)."""

_MIN_MAX_TOKENS = 8


@dataclass(frozen=True)
class ChunkingConfig:
    """How long documents are cut into passages.

    ``max_tokens`` is the passage budget in model tokens, *excluding* the ``[CLS]``, ``[D]``
    and ``[SEP]`` the encoder adds (an index sets it from ``doc_maxlen - 3`` by default).
    ``overlap_tokens`` is the approximate number of tokens each passage repeats from the end of
    the previous one: whole trailing sentences when they fit, otherwise the tail of the last
    sentence. ``enabled=False`` keeps every document as a single passage.
    """

    max_tokens: int = 256
    overlap_tokens: int = 32
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("max_tokens", "overlap_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"ChunkingConfig.{name} must be an int, got {value!r}")
        if not isinstance(self.enabled, bool):
            raise ValueError(f"ChunkingConfig.enabled must be a bool, got {self.enabled!r}")
        if self.max_tokens < _MIN_MAX_TOKENS:
            raise ValueError(
                f"ChunkingConfig.max_tokens must be at least {_MIN_MAX_TOKENS}, got "
                f"{self.max_tokens}; it is the passage budget in model tokens (doc_maxlen - 3)"
            )
        if not 0 <= self.overlap_tokens < self.max_tokens:
            raise ValueError(
                f"ChunkingConfig.overlap_tokens must be >= 0 and smaller than max_tokens "
                f"({self.max_tokens}), got {self.overlap_tokens}"
            )


@dataclass(frozen=True)
class Chunk:
    """One passage: ``text == document[start:end]``, stripped of surrounding whitespace."""

    text: str
    start: int
    end: int


# --------------------------------------------------------------------------- characters

_FULL_STOPS = frozenset("。．｡︒")  # always end a sentence (outside brackets)
_WIDE_MARKS = frozenset("！？‼⁇⁈⁉﹗﹖")  # full-width / symbol exclamation and question marks
_ASCII_MARKS = frozenset(".!?")  # end a sentence only before a space, the end or non-ASCII text
_TERMINATORS = _FULL_STOPS | _WIDE_MARKS | _ASCII_MARKS

_BRACKETS = {
    "「": "」",
    "『": "』",
    "（": "）",
    "(": ")",
    "［": "］",
    "[": "]",
    "｛": "｝",
    "{": "}",
    "〔": "〕",
    "〈": "〉",
    "《": "》",
    "【": "】",
    "〖": "〗",
    "〘": "〙",
    "〚": "〛",
    "“": "”",
    "‘": "’",
    "〝": "〟",
    "｢": "｣",
    "«": "»",
    "‹": "›",
}
_CLOSER_TO_OPENER = {close: open_ for open_, close in _BRACKETS.items()}
_CLOSERS = frozenset(_CLOSER_TO_OPENER) | frozenset("〞\"'")

# Characters str.splitlines() breaks on; "\r\n" counts as one break.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

# A sentence right after ！？ that starts with these usually continues it (「すごい！と思った」).
_CONTINUATIONS = frozenset("とっ")

_CLAUSE_MARKS = frozenset("、，､;；：")  # always a clause end
_ASCII_CLAUSE_MARKS = frozenset(",:")  # a clause end unless an ASCII letter/digit follows

_ZWJ = "\u200d"

# Boundary strengths: how good a place to end a passage the gap before a unit is.
_CHAR, _WORD, _CLAUSE, _SENTENCE, _PARAGRAPH = 0, 1, 2, 3, 4


def _is_hiragana(ch: str) -> bool:
    return "\u3041" <= ch <= "\u309f"


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _script(ch: str) -> int:
    """A coarse script class used to prefer word-like cut points inside unpunctuated text."""
    if _is_hiragana(ch):
        return 1
    if "\u30a0" <= ch <= "\u30ff" or "\u31f0" <= ch <= "\u31ff" or "\uff66" <= ch <= "\uff9f":
        return 2  # katakana (ー included)
    if (
        "\u4e00" <= ch <= "\u9fff"
        or "\u3400" <= ch <= "\u4dbf"
        or "\uf900" <= ch <= "\ufaff"
        or "\U00020000" <= ch <= "\U0003134f"
        or ch in "々〆〇ヶ"
    ):
        return 3  # kanji
    if ch.isalnum():
        return 4  # latin letters and digits, any width
    if ch.isspace():
        return 5
    return 6  # punctuation, symbols


def _attaches(text: str, i: int) -> bool:
    """True if a cut before ``text[i]`` would separate it from the character it modifies."""
    ch = text[i]
    return (
        unicodedata.combining(ch) != 0
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or "\ufe00" <= ch <= "\ufe0f"  # variation selectors
        or "\U000e0100" <= ch <= "\U000e01ef"
        or ch == _ZWJ
        or text[i - 1] == _ZWJ
        or ("\U0001f3fb" <= ch <= "\U0001f3ff")  # skin-tone modifiers
    )


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _gap_strength(gap: str) -> int:
    """Paragraph for a gap with two or more line breaks ("\\r\\n" is one), else sentence."""
    breaks = sum(1 for ch in gap if ch in _LINE_BREAKS) - gap.count("\r\n")
    return _PARAGRAPH if breaks >= 2 else _SENTENCE


# --------------------------------------------------------------------------- sentences


def _bracket_depth(text: str, start: int, end: int) -> tuple[list[int], set[int]]:
    """Nesting depth of matched brackets at each position of ``text[start:end]`` and the
    positions of the closers that were matched. Brackets never match across a line break, and
    an opener or closer without a partner is ignored, so one stray 「 cannot swallow a page."""
    diff = [0] * (end - start + 1)
    matched: set[int] = set()
    stack: list[tuple[str, int]] = []
    for i in range(start, end):
        ch = text[i]
        if ch in _LINE_BREAKS:
            stack.clear()
        elif ch in _BRACKETS:
            stack.append((ch, i))
        elif ch in _CLOSER_TO_OPENER:
            opener = _CLOSER_TO_OPENER[ch]
            for k in range(len(stack) - 1, -1, -1):
                if stack[k][0] == opener:
                    open_pos = stack[k][1]
                    del stack[k:]
                    diff[open_pos - start] += 1  # depth counts positions open_pos..i-1
                    diff[i - start] -= 1
                    matched.add(i)
                    break
    depth = [0] * (end - start)
    running = 0
    for k in range(end - start):
        running += diff[k]
        depth[k] = running
    return depth, matched


def _between_digits(text: str, i: int, start: int, end: int) -> bool:
    return start < i < end - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()


def _ends_sentence(run: str, nxt: str | None) -> bool:
    """Whether a run of terminators/closers ends the sentence, given the next character."""
    if nxt is None or nxt.isspace():
        return True
    if run[-1] in _CLOSERS and _is_hiragana(nxt):
        return False  # 「…。」と言った / …！」って
    if any(ch in _FULL_STOPS for ch in run):
        return True
    if nxt in _CONTINUATIONS:
        return False  # すごい！と思った
    if any(ch in _WIDE_MARKS for ch in run):
        return True
    return not nxt.isascii()  # 3.11, python.org, a.php?x=1 are not sentence ends


def _sentence_spans(
    text: str, start: int, end: int, respect_brackets: bool = True
) -> list[tuple[int, int, int]]:
    """Stripped sentence spans ``(start, end, strength_of_the_break_before)`` of
    ``text[start:end]``. With ``respect_brackets`` a terminator inside matched brackets or
    quotes does not end the sentence; the bracketed part ends it only as a whole (「…。」)."""
    if respect_brackets:
        depth, matched = _bracket_depth(text, start, end)
    else:
        depth, matched = [0] * (end - start), set()
    cuts = [start]
    i = start
    while i < end:
        ch = text[i]
        if ch in _LINE_BREAKS:
            i += 1
            cuts.append(i)
            continue
        closes_quote = i in matched and depth[i - start] == 0
        terminates = (
            ch in _TERMINATORS
            and depth[i - start] == 0
            and not (ch == "．" and _between_digits(text, i, start, end))  # ２．５
        )
        if terminates or closes_quote:
            if closes_quote:
                # a quote or bracket ends a sentence only if its content ended with one: 「…。」
                k = i - 1
                while k >= start and text[k] in _CLOSERS:
                    k -= 1
                if k < start or text[k] not in _TERMINATORS:
                    i += 1
                    continue
                run_start = k
            else:
                run_start = i
            j = i + 1
            while j < end and (text[j] in _TERMINATORS or text[j] in _CLOSERS):
                j += 1
            nxt = text[j] if j < end else None
            if _ends_sentence(text[run_start:j], nxt):
                cuts.append(j)
            i = j
            continue
        i += 1
    cuts.append(end)
    spans: list[tuple[int, int, int]] = []
    previous_end = start
    for a, b in pairwise(cuts):
        s, e = _strip_span(text, a, b)
        if s < e:
            strength = _gap_strength(text[previous_end:s]) if spans else _SENTENCE
            spans.append((s, e, strength))
            previous_end = e
    return spans


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text``, in order.

    Splits after 。．！？!? (full- and half-width variants), after closing quotes and brackets
    that follow them (「…。」 stays one sentence; a 。 inside a quote does not end the outer
    sentence), and at every line break. Each span is stripped of surrounding whitespace, so
    the spans plus the whitespace between them make up the whole text: no character is lost
    or reordered, and whitespace-only pieces are dropped.

    Heuristics: ASCII ``.!?`` end a sentence only before whitespace, the end of the text or
    non-ASCII text (``3.11``, ``python.org`` and ``a.php?x=1`` stay whole), and ``．`` between
    digits is a decimal point. A quote ending in a terminator followed by hiragana continues
    the sentence (「…。」と言った), as does ！？ followed by と or っ (すごい！と思った).
    Brackets only count when matched on the same line, so a stray 「 cannot swallow a page.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    return [(s, e) for s, e, _ in _sentence_spans(text, 0, len(text))]


# --------------------------------------------------------------------------- counting


class _Counts:
    """Batched, cached token counts of spans of one document."""

    def __init__(self, text: str, count_tokens: TokenCounter) -> None:
        self.text = text
        self.count_tokens = count_tokens
        self.cache: dict[tuple[int, int], int] = {}

    def __call__(self, spans: Sequence[tuple[int, int]]) -> list[int]:
        todo = list(dict.fromkeys(span for span in spans if span not in self.cache))
        if todo:
            texts = [self.text[s:e] for s, e in todo]
            result = self.count_tokens(texts)
            try:
                counts = [int(n) for n in result]
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    "count_tokens must return a list of integer token counts, one per text; "
                    f"got {type(result).__name__}"
                ) from exc
            if len(counts) != len(texts):
                raise ValueError(
                    f"count_tokens returned {len(counts)} counts for {len(texts)} texts; it "
                    "must return one count per input text, in order"
                )
            if any(n < 0 for n in counts):
                raise ValueError("count_tokens returned a negative token count")
            self.cache.update(zip(todo, counts, strict=True))
        return [self.cache[span] for span in spans]


def _last_fit(
    candidates: Sequence[int],
    span_of: Callable[[int], tuple[int, int]],
    counts: _Counts,
    limit: int,
    lo: int = -1,
    hi: int | None = None,
    lo_count: int = 0,
    fanout: int = 8,
) -> tuple[int, int, int]:
    """Search ``candidates`` (increasing cut positions) for the last one whose span fits.

    Invariant: index ``lo`` fits (``-1`` stands for "nothing yet"), index ``hi`` does not (or
    is past the end). Each round counts up to ``fanout`` probes in one batched call, so a
    search costs O(log n) calls. Returns ``(lo, hi, count at lo)``; when counts are not
    monotone the result is still a fitting candidate whose successor does not fit.
    """
    hi = len(candidates) if hi is None else hi
    while hi - lo > 1:
        if hi - lo - 1 <= fanout:
            probes = list(range(lo + 1, hi))
        else:
            probes = sorted({lo + (hi - lo) * j // (fanout + 1) for j in range(1, fanout + 1)})
        found = counts([span_of(candidates[i]) for i in probes])
        new_hi = hi
        for i, n in zip(probes, found, strict=True):
            if n > limit:
                new_hi = i
                break
            lo, lo_count = i, n
        hi = new_hi
    return lo, hi, lo_count


# --------------------------------------------------------------------------- cutting


def _cut_after(text: str, start: int, end: int, is_cut: Callable[[int], bool]) -> list[int]:
    return [i + 1 for i in range(start, end - 1) if is_cut(i)]


def _pieces(text: str, start: int, end: int, cuts: list[int], strength: int):
    bounds = [start, *cuts, end]
    out = []
    for a, b in pairwise(bounds):
        s, e = _strip_span(text, a, b)
        if s < e:
            out.append((s, e, strength))
    return out


def _clause_pieces(text: str, start: int, end: int) -> list[tuple[int, int, int]]:
    def is_cut(i: int) -> bool:
        ch = text[i]
        if ch in _CLAUSE_MARKS:
            return text[i + 1] not in _CLAUSE_MARKS and text[i + 1] not in _CLOSERS
        if ch in _ASCII_CLAUSE_MARKS:
            return not _is_ascii_alnum(text[i + 1])  # 2,000 and 10:30 stay whole
        return False

    return _pieces(text, start, end, _cut_after(text, start, end, is_cut), _CLAUSE)


def _word_pieces(text: str, start: int, end: int) -> list[tuple[int, int, int]]:
    cuts = _cut_after(text, start, end, lambda i: text[i].isspace())
    return _pieces(text, start, end, cuts, _WORD)


def _sentence_pieces(text: str, start: int, end: int) -> list[tuple[int, int, int]]:
    return _sentence_spans(text, start, end, respect_brackets=False)


def _character_pieces(
    text: str, start: int, end: int, total: int, limit: int, counts: _Counts
) -> list[tuple[int, int, int]]:
    """Cut ``text[start:end]`` (``total`` tokens, no usable punctuation) into pieces of at most
    ``limit`` tokens. Cut points are searched among script changes first (hiragana to kanji,
    katakana to anything, ...; never kanji to hiragana, which would split okurigana), then
    among all character boundaries, never before a combining mark."""
    preferred: list[int] = []
    allowed: list[int] = []
    for i in range(start + 1, end):
        if text[i - 1].isspace() or _attaches(text, i):
            continue
        allowed.append(i)
        a, b = _script(text[i - 1]), _script(text[i])
        if a != b and not (a == 3 and b == 1) and not _is_ascii_alnum(text[i - 1] + text[i]):
            preferred.append(i)
    preferred.append(end)
    allowed.append(end)

    chars_per_token = (end - start) / max(total, 1)
    pieces: list[tuple[int, int, int]] = []
    s = start
    while s < end:

        def span_of(p: int, s: int = s) -> tuple[int, int]:
            return (s, p)

        first = bisect_right(preferred, s)
        cands = preferred[first:]
        # gallop from a proportional guess so a huge blob is not re-counted in full per piece
        lo, hi, lo_count = -1, len(cands), 0
        guess = int(limit * chars_per_token * 1.5) + 8
        while True:
            g = bisect_left(cands, s + guess)
            if g >= hi:
                break
            (n,) = counts([span_of(cands[g])])
            if n > limit:
                hi = g
                break
            lo, lo_count, guess = g, n, guess * 2
        lo, hi, lo_count = _last_fit(cands, span_of, counts, limit, lo, hi, lo_count)
        if lo == len(cands) - 1:  # the rest fits
            pieces.append((s, end, _CHAR))
            break
        good = cands[lo] if lo >= 0 else s
        if lo < 0 or lo_count < limit / 2:
            # refine between the last fitting and first failing preferred cut
            a, b = bisect_right(allowed, good), bisect_left(allowed, cands[hi])
            sub = allowed[a:b]
            k, _, k_count = _last_fit(sub, span_of, counts, limit)
            if k >= 0:
                good, lo_count = sub[k], k_count
        if good == s:  # a single character over budget: keep it whole rather than loop
            good = allowed[bisect_right(allowed, s)]
        pieces.append((s, good, _CHAR))
        s = good
    return pieces


# --------------------------------------------------------------------------- chunking


@dataclass
class _Units:
    """Stripped, in-order spans that each fit the budget, with the gaps between them."""

    starts: list[int]
    ends: list[int]
    tokens: list[int]
    strength: list[int]  # strength of the break before unit i (unused for i == 0)
    gap_tokens: list[int]  # tokens of the whitespace before unit i (0 for i == 0)

    def __post_init__(self) -> None:
        self.prefix = [0]
        for i, n in enumerate(self.tokens):
            self.prefix.append(self.prefix[-1] + n + (self.gap_tokens[i] if i else 0))

    def estimate(self, a: int, b: int) -> int:
        """Estimated tokens of units ``a..b-1`` and the gaps between them."""
        return self.prefix[b] - self.prefix[a] - (self.gap_tokens[a] if a else 0)


def _units(
    text: str, start: int, end: int, limit: int, piece_limit: int, counts: _Counts
) -> _Units:
    """Sentences, with the ones over ``limit`` tokens cut at inner sentence ends, then 、，,
    then spaces, then characters (pieces of at most ``piece_limit`` tokens, leaving room for
    the overlap the next passage carries)."""
    pending = _sentence_spans(text, start, end)
    tokens = counts([(s, e) for s, e, _ in pending])
    units = [(s, e, st, n) for (s, e, st), n in zip(pending, tokens, strict=True)]
    for splitter in (_sentence_pieces, _clause_pieces, _word_pieces):
        if all(n <= limit for *_, n in units):
            break
        replaced: list[list[tuple[int, int, int]] | None] = []
        for s, e, _, n in units:
            pieces = splitter(text, s, e) if n > limit else []
            replaced.append(pieces if len(pieces) > 1 else None)
        found = counts([(s, e) for pieces in replaced if pieces for s, e, _ in pieces])
        it = iter(found)
        refined = []
        for unit, pieces in zip(units, replaced, strict=True):
            if pieces is None:
                refined.append(unit)
                continue
            for k, (s, e, st) in enumerate(pieces):
                refined.append((s, e, unit[2] if k == 0 else st, next(it)))
        units = refined
    final = []
    for s, e, st, n in units:
        if n <= limit:
            final.append((s, e, st, n))
            continue
        pieces = _character_pieces(text, s, e, n, piece_limit, counts)
        piece_counts = counts([(ps, pe) for ps, pe, _ in pieces])
        for k, ((ps, pe, pst), pn) in enumerate(zip(pieces, piece_counts, strict=True)):
            final.append((ps, pe, st if k == 0 else pst, pn))
    gaps = [(final[i - 1][1], final[i][0]) for i in range(1, len(final))]
    gap_counts = counts([g for g in gaps if g[0] < g[1]])
    it = iter(gap_counts)
    gap_tokens = [0] + [next(it) if a < b else 0 for a, b in gaps]
    return _Units(
        starts=[u[0] for u in final],
        ends=[u[1] for u in final],
        tokens=[u[3] for u in final],
        strength=[u[2] for u in final],
        gap_tokens=gap_tokens,
    )


@dataclass(frozen=True)
class _Overlap:
    start: int  # character where the carried text starts (inside or at a unit start)
    tokens: int  # estimated tokens of the carried text (up to the end of the next unit - 1)


class _Packer:
    def __init__(self, text: str, units: _Units, config: ChunkingConfig, counts: _Counts):
        self.text = text
        self.u = units
        self.max = config.max_tokens
        self.overlap = config.overlap_tokens
        self.counts = counts
        self.n = len(units.starts)

    def plan(self, c: int, ov: _Overlap | None) -> tuple[int, int]:
        """Greedy passage starting with new unit ``c``: ``(start char, end unit)``."""
        u = self.u
        base = ov.tokens + u.gap_tokens[c] if ov else 0
        if ov and base + u.tokens[c] > self.max:
            ov, base = None, 0
        # largest b with base + estimate(c, b) <= max  <=>  prefix[b] <= limit
        limit = self.max - base + u.prefix[c] + (u.gap_tokens[c] if c else 0)
        b = min(max(bisect_right(u.prefix, limit) - 1, c + 1), self.n)
        if b < self.n:
            # end at the strongest break that still leaves the passage at least half full
            best, best_strength = b, u.strength[b]
            for k in range(b - 1, c, -1):
                if u.strength[k] > best_strength and base + u.estimate(c, k) >= self.max / 2:
                    best, best_strength = k, u.strength[k]
            b = best
        return (ov.start if ov else u.starts[c]), b

    def carry(self, chunk_start: int, b: int) -> _Overlap | None:
        """The text the passage after ``[chunk_start, end of unit b-1]`` repeats."""
        if self.overlap == 0:
            return None
        u = self.u
        o, total = b, 0
        while o > 0 and u.starts[o - 1] > chunk_start:
            add = u.tokens[o - 1] + (u.gap_tokens[o] if o < b else 0)
            if total + add > self.overlap:
                break
            total += add
            o -= 1
        if o < b:
            return _Overlap(u.starts[o], total)
        if u.tokens[b - 1] <= self.overlap:
            return None  # the last sentence would fit, but it is the whole passage
        # the last sentence alone is too long: carry its tail, cut at 、 or a script change
        s, e, n = u.starts[b - 1], u.ends[b - 1], u.tokens[b - 1]
        want = int((e - s) * self.overlap / max(n, 1))
        earliest = max(e - want, chunk_start + 1, s + 1)
        if want < 1 or earliest >= e:
            return None
        text = self.text
        p = earliest
        for ok in (
            lambda i: text[i - 1] in _CLAUSE_MARKS or text[i - 1] in _ASCII_CLAUSE_MARKS,
            lambda i: (
                _script(text[i - 1]) != _script(text[i])
                and not (_script(text[i - 1]) == 3 and _script(text[i]) == 1)
            ),
        ):
            found = next((i for i in range(earliest, e) if ok(i) and not _attaches(text, i)), None)
            if found is not None and (e - found) * 2 >= want:
                p = found
                break
        else:
            while p < e and _attaches(text, p):
                p += 1
        while p < e and text[p].isspace():
            p += 1
        if p >= e:
            return None
        return _Overlap(p, math.ceil(n * (e - p) / (e - s)))

    def fix(self, start: int, c: int, b: int) -> tuple[int, int]:
        """A planned passage was over budget: end it earlier, dropping the overlap if needed."""
        u = self.u

        def search(start: int, last: int) -> int:
            ends = list(range(c + 1, last + 1))
            k, _, _ = _last_fit(ends, lambda j: (start, u.ends[j - 1]), self.counts, self.max)
            return ends[k] if k >= 0 else -1

        b_fit = search(start, b - 1)
        if b_fit < 0 and start != u.starts[c]:  # even one new unit is too much with the overlap
            start = u.starts[c]
            b_fit = search(start, b)
        # a unit alone always fits (it was counted alone), except a single oversized character
        return start, max(b_fit, c + 1)

    def run(self, window: int = 64) -> list[tuple[int, int]]:
        u = self.u
        out: list[tuple[int, int]] = []
        c, ov = 0, None
        while c < self.n:
            planned: list[tuple[int, int, int]] = []
            pc, pov = c, ov
            while pc < self.n and len(planned) < window:
                start, b = self.plan(pc, pov)
                planned.append((start, pc, b))
                pov, pc = self.carry(start, b), b
            found = self.counts([(start, u.ends[b - 1]) for start, _, b in planned])
            for (start, pc, b), n in zip(planned, found, strict=True):
                if n > self.max:
                    start, b = self.fix(start, pc, b)
                out.append((start, u.ends[b - 1]))
                c, ov = b, self.carry(start, b)
                if n > self.max:
                    break  # re-plan from the shortened passage
        return out


def chunk_text(
    text: str, count_tokens: TokenCounter, config: ChunkingConfig | None = None
) -> list[Chunk]:
    """Cut ``text`` into passages of at most ``config.max_tokens`` tokens.

    ``count_tokens`` receives a batch of strings and returns each one's token count in the
    model's tokenizer (without special tokens). A text that fits is returned whole as one
    chunk; otherwise sentences are packed greedily, preferring to end a passage at a blank line
    or a sentence end, and each passage after the first repeats about
    ``config.overlap_tokens`` tokens from the end of the previous one. Chunks are stripped of
    surrounding whitespace, in document order, together cover every non-whitespace character,
    and satisfy ``text[chunk.start:chunk.end] == chunk.text``.

    The only case in which a chunk can exceed the budget is a single character (with its
    combining marks) that alone counts more than ``max_tokens`` tokens.
    """
    config = ChunkingConfig() if config is None else config
    if not isinstance(config, ChunkingConfig):
        raise TypeError(f"config must be a ChunkingConfig, got {type(config).__name__}")
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    start, end = _strip_span(text, 0, len(text))
    if start == end:
        raise ValueError("cannot chunk an empty or whitespace-only text; pass non-empty text")
    if not config.enabled:
        return [Chunk(text[start:end], start, end)]
    counts = _Counts(text, count_tokens)
    if counts([(start, end)])[0] <= config.max_tokens:
        return [Chunk(text[start:end], start, end)]
    limit = config.max_tokens
    piece_limit = max(limit - config.overlap_tokens, limit // 2)
    units = _units(text, start, end, limit, piece_limit, counts)
    spans = _Packer(text, units, config, counts).run()
    return [Chunk(text[s:e], s, e) for s, e in spans]
