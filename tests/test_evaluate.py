"""Evaluation sets and their scoring, on real recordings with the shipped bundle."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from tools.corpus import DEFAULT_DATA, read_manifest
from tools.evaluate import EVAL_GRAMMARS, an4_items, fsdd_items, run_set

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DATA / "manifest.csv").exists(), reason="no shared data"
)


def _few_per_speaker(items, per_speaker: int):
    kept: dict[str, list] = {}
    for item in items:
        if len(kept.setdefault(item.speaker, [])) < per_speaker:
            kept[item.speaker].append(item)
    return [item for group in kept.values() for item in group]


def test_digit_accuracy_per_speaker_adds_up_to_the_whole() -> None:
    items = _few_per_speaker(fsdd_items(read_manifest(DEFAULT_DATA), "test"), 6)
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR, grammar=EVAL_GRAMMARS / "fsdd.yaml")
    result = run_set(recognizer, items, "fsdd")
    by_speaker = result["by_speaker"]
    assert sorted(by_speaker) == sorted({item.speaker for item in items})
    assert len(by_speaker) == 2  # FSDD's two test speakers
    # Equal clips per speaker: the whole is the mean of the parts.
    assert result["accuracy"] == pytest.approx(np.mean(list(by_speaker.values())))


def test_word_error_rate_per_speaker() -> None:
    items = _few_per_speaker(an4_items(read_manifest(DEFAULT_DATA), "test"), 1)[:3]
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR, grammar=EVAL_GRAMMARS / "an4.yaml")
    result = run_set(recognizer, items, "an4")
    words = {item.speaker: len(item.text.split()) for item in items}
    weighted = sum(result["by_speaker"][s] * n for s, n in words.items()) / sum(words.values())
    assert result["wer"] == pytest.approx(weighted)
    assert len(result["by_speaker"]) == 3
