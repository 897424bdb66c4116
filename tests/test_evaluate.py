"""Evaluation sets and their scoring, on real recordings with the shipped bundle."""

from __future__ import annotations

import numpy as np
import pytest
from shared_data import needs_shared_data

from assistant.edges import frame_levels_db
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from tools.corpus import DEFAULT_DATA, read_manifest
from tools.evaluate import (
    EVAL_GRAMMARS,
    an4_items,
    evaluate,
    fsdd_items,
    paired,
    run_set,
    through_channel,
)

pytestmark = needs_shared_data


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
    # Every digit is a command: what was accepted was either right or acted on wrongly.
    assert result["accepted"] == pytest.approx(result["accuracy"] + result["wrong_accepted"])
    assert "must_reject_accepted" not in result


def test_heard_counts_right_readings_the_bar_turned_away() -> None:
    items = _few_per_speaker(fsdd_items(read_manifest(DEFAULT_DATA), "test"), 8)
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR, grammar=EVAL_GRAMMARS / "fsdd.yaml")
    result = run_set(recognizer, items, "fsdd")
    # Every digit accepted and right was also heard right; the rest were heard right but
    # turned away by the bar (their reading kept as the guess).
    assert result["heard"] >= result["accuracy"]
    assert result["heard"] <= result["accuracy"] + 1 - result["accepted"]
    # With no bar at all, what is heard is what is accepted.
    recognizer.threshold = 0.0
    unbarred = run_set(recognizer, items, "fsdd")
    assert unbarred["accepted"] == 1.0
    assert unbarred["heard"] == pytest.approx(unbarred["accuracy"])
    assert unbarred["heard"] == pytest.approx(result["heard"])


def test_word_error_rate_per_speaker() -> None:
    items = _few_per_speaker(an4_items(read_manifest(DEFAULT_DATA), "test"), 1)[:3]
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR, grammar=EVAL_GRAMMARS / "an4.yaml")
    result = run_set(recognizer, items, "an4")
    words = {item.speaker: len(item.text.split()) for item in items}
    weighted = sum(result["by_speaker"][s] * n for s, n in words.items()) / sum(words.values())
    assert result["wer"] == pytest.approx(weighted)
    assert len(result["by_speaker"]) == 3


def test_the_narrow_channel_hears_the_same_clips_without_their_top_band() -> None:
    items = _few_per_speaker(an4_items(read_manifest(DEFAULT_DATA), "test"), 1)[:2]
    assert through_channel(items, "wide") is items
    narrow = through_channel(items, "narrow")
    for wide_item, narrow_item in zip(items, narrow, strict=True):
        assert (narrow_item.text, narrow_item.speaker) == (wide_item.text, wide_item.speaker)
        assert narrow_item.audio.shape == wide_item.audio.shape
        cut = int(0.6 * wide_item.audio.size // 2)  # 4.8 kHz and up
        top_narrow = np.sum(np.abs(np.fft.rfft(narrow_item.audio))[cut:] ** 2)
        top_wide = np.sum(np.abs(np.fft.rfft(wide_item.audio))[cut:] ** 2)
        assert top_narrow < 0.1 * top_wide
    # The recogniser still hears the words (AN4 is spelled letters and digits: all under 4 kHz).
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR, grammar=EVAL_GRAMMARS / "an4.yaml")
    assert run_set(recognizer, narrow, "an4 narrow")["wer"] < 0.5


def test_the_trimmed_channel_cuts_each_clip_to_its_speech() -> None:
    items = _few_per_speaker(an4_items(read_manifest(DEFAULT_DATA), "test"), 1)[:2]
    trimmed = through_channel(items, "trimmed")
    for whole, cut in zip(items, trimmed, strict=True):
        assert (cut.text, cut.speaker) == (whole.text, whole.speaker)
        # AN4 recordings hold ~0.3 s of quiet before the speech: it is gone, the speech is not.
        assert 0.2 * 16000 < cut.audio.size < whole.audio.size - 0.2 * 16000
        levels = frame_levels_db(cut.audio)
        assert levels[0] > levels.max() - 30.5 and levels[-1] > levels.max() - 30.5


def test_a_paired_comparison_counts_the_clips_each_model_alone_gets_right() -> None:
    """Nine clips only the model gets right and none the other: the split a fair coin gives
    with probability 2 / 2**9 (two-sided). Agreement everywhere is no evidence at all."""
    rights = [True] * 9 + [True, False, False]
    other = [False] * 9 + [True, False, False]
    result = paired(rights, other)
    assert (result["only_model"], result["only_against"]) == (9, 0)
    assert result["mcnemar_p"] == pytest.approx(2 / 2**9)
    assert result["against_accuracy"] == pytest.approx(1 / 12)
    assert paired(rights, rights)["mcnemar_p"] == 1.0
    balanced = paired([True, False] * 5, [False, True] * 5)
    assert (balanced["only_model"], balanced["only_against"]) == (5, 5)
    assert balanced["mcnemar_p"] == pytest.approx(1.0)


def test_a_bundle_against_itself_differs_on_no_clip() -> None:
    """--against runs the second bundle on the very clips the first heard, in order: the
    shipped bundle against itself agrees clip by clip, on every set."""
    results = evaluate(
        DEFAULT_MODEL_DIR, DEFAULT_DATA, split="dev", limit=6, against=DEFAULT_MODEL_DIR
    )
    compared = {name: r["paired"] for name, r in results.items() if r["clips"]}
    assert set(compared) == {"speech_commands", "an4", "false_accepts"}  # no FSDD dev speaker
    for name, pair in compared.items():
        assert (pair["only_model"], pair["only_against"], pair["mcnemar_p"]) == (0, 0, 1.0)
        assert pair["against_accuracy"] == pytest.approx(results[name]["accuracy"])
