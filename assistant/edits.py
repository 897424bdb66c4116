"""Edit distance between two sequences (words, phone tokens): insertions, deletions and
substitutions, each costing one. Used for the word error rate in tools/ and, at runtime, for
how far the grammar's answer lies from what the CTC head heard on its own.

Twelve lines of dynamic programming over sequences of a few dozen items: a dependency
(rapidfuzz, editdistance) would be one more compiled wheel to find for 32-bit Pi OS.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    row = list(range(len(b) + 1))  # distances from a[:i] to every prefix of b
    for i in range(1, len(a) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(b) + 1):
            best = min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1]))
            diagonal, row[j] = row[j], best
    return row[len(b)]
