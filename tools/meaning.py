"""Whether an answer means what was said: the one comparison of intent and slots that every
scorer in tools/ uses (evaluation, calibration, held-out voices, asking, the benchmark)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def same_meaning(
    intent: str | None,
    slots: Mapping[str, Any],
    expected_intent: str | None,
    expected_slots: Mapping[str, Any],
    labelled_only: bool = False,
) -> bool:
    """The expected intent and slot values, compared as text (50 and "50" alike).

    With ``labelled_only`` only the slots the expectation names are judged: a corpus label or
    a user's labels.json may name some of a command's slots and not others. Otherwise the
    answer's slots must be exactly the expected ones, as where the expectation is the
    grammar's whole reading of the sentence said (held-out commands): an extra slot there is
    another command."""
    if intent != expected_intent:
        return False
    if labelled_only:
        return all(str(slots.get(k)) == str(v) for k, v in expected_slots.items())
    return {k: str(v) for k, v in slots.items()} == {k: str(v) for k, v in expected_slots.items()}
