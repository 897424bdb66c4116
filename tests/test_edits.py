"""Edit distance: the word error rate of tools/ and a confidence feature of the runtime."""

from __future__ import annotations

from assistant.edits import edit_distance
from tools.evaluate import word_errors


def test_edit_distance_counts_insertions_deletions_and_substitutions() -> None:
    assert edit_distance("kitten", "sitting") == 3  # two substitutions, one insertion
    assert edit_distance([], [1, 2]) == 2
    assert edit_distance([1, 2, 3], []) == 3
    assert edit_distance([4, 5, 6], [4, 5, 6]) == 0
    assert edit_distance([1, 2, 3], [3, 2, 1]) == 2


def test_word_errors_are_edits_of_words() -> None:
    assert word_errors("turn on the light", "turn the lights on") == (3, 4)
    assert word_errors("", "") == (0, 0)
