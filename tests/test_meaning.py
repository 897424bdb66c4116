"""The one comparison of an answer's intent and slots with what was said (tools/meaning.py)."""

from __future__ import annotations

from tools.meaning import same_meaning


def test_values_are_compared_as_text() -> None:
    assert same_meaning("HassLightSet", {"brightness": 50}, "HassLightSet", {"brightness": "50"})
    assert not same_meaning("HassLightSet", {"brightness": 5}, "HassLightSet", {"brightness": 50})


def test_another_intent_is_wrong_whatever_the_slots() -> None:
    assert not same_meaning("HassTurnOff", {"area": "kitchen"}, "HassTurnOn", {"area": "kitchen"})
    assert not same_meaning(None, {}, "HassTurnOn", {}, labelled_only=True)


def test_a_slot_the_whole_reading_lacks_makes_another_command() -> None:
    # "turn on the kitchen light" where "turn on the light" was said
    said = ("HassTurnOn", {"name": "light"})
    heard = ("HassTurnOn", {"name": "light", "area": "kitchen"})
    assert not same_meaning(*heard, *said)
    # a label that names only some slots judges only those
    assert same_meaning(*heard, *said, labelled_only=True)
    assert not same_meaning("HassTurnOn", {"area": "kitchen"}, *said, labelled_only=True)


def test_nothing_expected_is_met_only_by_nothing() -> None:
    assert same_meaning(None, {}, None, {})
    assert not same_meaning("Stop", {}, None, {})
