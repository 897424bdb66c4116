"""Phones -> the recogniser's output units, and back.

Two unit sets exist. ``Units.phones()`` is one token per phone with "|" between words (every
bundle up to home 2.7). A *piece* set (``Units.pieces(merges)``) spells each word as phone
pieces learned by byte-pair merging, the first piece of a word marked with a leading "|"
("turn on" -> "|T ER N", "|AA N"): no boundary token, and about half as many tokens per
command, so the decoder takes half as many steps. Every single phone, and every phone as a
word's first, stays a unit, so any word of any grammar can still be spelled.

Both sets begin with <pad> (index 0, also the decoder's start token) and </s> (index 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .lexicon import EOS, EOS_ID, PAD, PAD_ID, PHONES, TOKENS, WORD_BOUNDARY

WORD_START = "|"  # a piece that begins a word starts with it


class UnitsError(ValueError):
    pass


@dataclass(frozen=True)
class Units:
    tokens: tuple[str, ...]
    merges: tuple[tuple[str, str], ...] = ()
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    _ranks: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {t: i for i, t in enumerate(self.tokens)})
        ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        object.__setattr__(self, "_ranks", ranks)

    @classmethod
    def phones(cls) -> Units:
        return _PHONE_UNITS

    @classmethod
    def pieces(cls, merges: Iterable[Sequence[str]]) -> Units:
        """The piece set made by ``merges`` (pairs of units, in the order they were learned)."""
        pairs = tuple((str(a), str(b)) for a, b in merges)
        tokens = [PAD, EOS, *PHONES, *(WORD_START + p for p in PHONES)]
        known = set(tokens)
        for a, b in pairs:
            if a not in known or b not in known or b.startswith(WORD_START):
                raise UnitsError(f"merge {a!r} + {b!r}: not two units of one word")
            merged = f"{a} {b}"
            if merged in known:
                raise UnitsError(f"merge {a!r} + {b!r}: {merged!r} is already a unit")
            tokens.append(merged)
            known.add(merged)
        return cls(tuple(tokens), pairs)

    @classmethod
    def from_manifest(cls, tokens: Sequence[str], merges: Sequence[Sequence[str]] | None) -> Units:
        """The unit set a bundle's manifest names; raises UnitsError if it is not one we know."""
        units = cls.pieces(merges) if merges else cls.phones()
        if tuple(tokens) != units.tokens:
            raise UnitsError("its tokens are not the ones this version of the recogniser uses")
        return units

    @property
    def has_boundary(self) -> bool:
        """True for the phone set, whose words are separated by a "|" token."""
        return WORD_BOUNDARY in self.index

    @property
    def boundary_id(self) -> int:
        return self.index[WORD_BOUNDARY]

    @property
    def word_start_ids(self) -> range:
        """Ids of the units that may begin a word (the phone set: every phone)."""
        if self.has_boundary:
            return range(self.boundary_id + 1, len(self.tokens))
        return range(2 + len(PHONES), len(self.tokens))

    def spell(self, words: Iterable[Sequence[str]]) -> list[int]:
        """Token ids of words given as phone sequences (no </s>)."""
        ids: list[int] = []
        for i, phones in enumerate(words):
            if self.has_boundary:
                if i:
                    ids.append(self.boundary_id)
                ids.extend(self.index[p] for p in phones)
            else:
                ids.extend(self.index[u] for u in self._merge(phones))
        return ids

    def _merge(self, phones: Sequence[str]) -> list[str]:
        # Byte-pair encoding of one word: merge the adjacent pair learned first, until none
        # is left. Hand-written (20 lines) rather than a tokenizer library: our symbols are
        # phones, not characters, and the daemon should not carry a library for this.
        units = [WORD_START + phones[0], *phones[1:]] if phones else []
        while len(units) > 1:
            rank, at = min(
                (self._ranks.get((a, b), len(self._ranks)), i)
                for i, (a, b) in enumerate(zip(units, units[1:], strict=False))
            )
            if rank == len(self._ranks):
                break
            units[at : at + 2] = [f"{units[at]} {units[at + 1]}"]
        return units

    def words(self, ids: Iterable[int]) -> list[list[str]]:
        """The phones of each word these tokens spell (</s> and <pad> ignored)."""
        words: list[list[str]] = []
        for token in ids:
            if token in (PAD_ID, EOS_ID):
                continue
            text = self.tokens[token]
            if text == WORD_BOUNDARY:
                words.append([])
                continue
            if text.startswith(WORD_START) or not words:
                words.append([])
            words[-1].extend(text.lstrip(WORD_START).split())
        return [w for w in words if w]

    def from_phone_ids(self, ids: Iterable[int]) -> list[int]:
        """Phone-set token ids (training targets as cached) -> this set's ids, </s> kept."""
        phone_words = Units.phones().words(ids)
        return [*self.spell(phone_words), EOS_ID]


_PHONE_UNITS = Units(TOKENS)


def learn_merges(word_counts: dict[tuple[str, ...], float], count: int) -> list[tuple[str, str]]:
    """``count`` byte-pair merges over words (phone tuples) with their weights: each time the
    adjacent pair of units with the largest total weight becomes one unit."""
    spelled = {(WORD_START + w[0], *w[1:]): c for w, c in word_counts.items() if w}
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: dict[tuple[str, str], float] = {}
        for word, weight in spelled.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] = pairs.get(pair, 0.0) + weight
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        joined = f"{best[0]} {best[1]}"
        merged: dict[tuple[str, ...], float] = {}
        for word, weight in spelled.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0.0) + weight
        spelled = merged
    return merges
