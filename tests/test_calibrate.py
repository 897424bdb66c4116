"""Calibration negatives: the synthetic non-speech generator and its place in tools.calibrate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # tools.calibrate writes manifests through tools.export

from assistant.bundle import BundleError
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from tools.augment import speech_power
from tools.calibrate import (
    NOISY_SNRS,
    Clips,
    choose_recheck,
    choose_threshold,
    collect,
    in_noise,
)
from tools.evaluate import Item
from tools.nonspeech import (
    KINDS,
    MAX_LEAD_S,
    MAX_SECONDS,
    MAX_TAIL_S,
    MIN_SECONDS,
    RATE,
    is_clear,
    sounds,
)

HELD_OUT_HZ = (440.0, 1000.0)  # the tones tests/test_audio_hostile.py plays


def share_of_frames_peaking_at(audio: np.ndarray, freqs: tuple[float, ...]) -> float:
    """Share of 50 ms frames whose strongest frequency is within 3% of one of ``freqs``."""
    n = RATE // 20
    frames = audio[: audio.size // n * n].reshape(-1, n).astype(np.float64) * np.hanning(n)
    peaks = np.fft.rfftfreq(n, 1 / RATE)[np.abs(np.fft.rfft(frames, axis=1)).argmax(axis=1)]
    return float(np.mean([any(abs(p - f) < 0.03 * f for f in freqs) for p in peaks]))


def test_sounds_are_deterministic_and_a_prefix_of_a_longer_run() -> None:
    first, again = sounds(24), sounds(24)
    assert [s.name for s in first] == [s.name for s in again]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(first, again, strict=True))
    shorter = sounds(10)
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(shorter, first, strict=False))
    other_seed = sounds(24, seed=1)
    assert not any(np.array_equal(a.audio, b.audio) for a, b in zip(first, other_seed, strict=True))


def test_sounds_are_16k_float_clips_of_every_kind_and_level() -> None:
    clips = sounds(60)
    assert {s.name.split()[0] for s in clips} == set(KINDS)
    peaks_db = []
    for s in clips:
        assert s.audio.dtype == np.float32 and s.audio.ndim == 1, s.name
        longest = (MAX_SECONDS + MAX_LEAD_S + MAX_TAIL_S) * RATE
        assert MIN_SECONDS * RATE <= s.audio.size <= longest, s.name
        assert np.all(np.isfinite(s.audio)) and np.max(np.abs(s.audio)) <= 1.0, s.name
        peaks_db.append(20 * np.log10(np.max(np.abs(s.audio))))
    # Never silence: the quietest sound is still well above its -65 dBFS noise floor.
    assert min(peaks_db) > -50.0
    assert max(peaks_db) > -0.5 and min(peaks_db) < -30.0  # full scale down to quiet


def test_sounds_are_sounds_not_noise_floor() -> None:
    # Tonal kinds are mostly one strong frequency: the spectrum is far from flat.
    for s in sounds(12):
        if s.name.startswith(("steady", "beeping")):
            spectrum = np.abs(np.fft.rfft(s.audio.astype(np.float64))) ** 2
            assert spectrum.max() > 100 * np.median(spectrum), s.name


def test_no_sound_sits_at_the_held_out_test_tones() -> None:
    for f in HELD_OUT_HZ:  # the check would see them
        tone = np.sin(2 * np.pi * f * np.arange(RATE) / RATE)
        assert share_of_frames_peaking_at(tone, HELD_OUT_HZ) == 1.0
    assert not is_clear([441.0]) and not is_clear([3 * 333.0]) and is_clear([523.0])
    for s in sounds(200):
        # Sweeps may pass through 440 Hz or 1 kHz, but never stay there.
        assert share_of_frames_peaking_at(s.audio, HELD_OUT_HZ) < 0.25, s.name


def test_choose_threshold_keeps_false_accepts_on_confident_tones_under_one_percent() -> None:
    # 100 right commands at 0.9, and 100 tones the decoder is sure of (0.6-0.85).
    p = np.concatenate([np.full(100, 0.9), np.linspace(0.6, 0.85, 100)])
    right = np.concatenate([np.ones(100), np.zeros(100)])
    negative = np.concatenate([np.zeros(100, bool), np.ones(100, bool)])
    threshold = choose_threshold(p, right, negative)
    assert np.mean(p[negative] >= threshold) <= 0.01
    assert np.all(p[right > 0] >= threshold)


def test_collect_adds_the_sounds_as_negatives(tmp_path: Path) -> None:
    try:
        Recognizer.load(DEFAULT_MODEL_DIR)
    except BundleError as exc:
        pytest.skip(f"models/home bundle not usable: {exc}")
    data = tmp_path / "data"  # no real clips: only the synthetic sounds are collected
    data.mkdir()
    (data / "manifest.csv").write_text("path,corpus,split,speaker,text,label,seconds\n")
    x, right, negative, agreed = collect(DEFAULT_MODEL_DIR, data, Clips(nonspeech=12))
    # A grammar decoder reads most tones as some command: that is why they are needed.
    assert 6 <= len(x) <= 12
    assert x.shape[1] > 0 and np.all(np.isfinite(x))
    assert negative.all() and not right.any()
    assert agreed.shape == right.shape  # each clip also heard at the recheck's speeds
    x0, _, _, _ = collect(DEFAULT_MODEL_DIR, data, Clips(nonspeech=0))
    assert len(x0) == 0
    _, _, _, unchecked = collect(DEFAULT_MODEL_DIR, data, Clips(nonspeech=4, recheck=False))
    assert not unchecked.any()


def _borderline_clips() -> tuple[np.ndarray, ...]:
    """200 sure right answers (0.9), 100 borderline commands (0.3-0.7) of which the 60 right
    ones are heard the same at other speeds and the 40 wrong ones are not, and 200
    non-commands under the bar (0.1-0.45) that rehearing does not fool either."""
    p = np.concatenate([np.full(200, 0.9), np.linspace(0.3, 0.7, 100), np.linspace(0.1, 0.45, 200)])
    right = np.concatenate([np.ones(200), np.arange(100) % 5 < 3, np.zeros(200)]).astype(float)
    negative = np.concatenate([np.zeros(300, bool), np.ones(200, bool)])
    return p, right, negative


def test_a_recheck_band_is_chosen_where_rehearing_tells_right_from_wrong() -> None:
    p, right, negative = _borderline_clips()
    agreed = right > 0
    threshold = choose_threshold(p, right, negative)
    recheck = choose_recheck(p, right, negative, agreed, threshold)
    assert recheck is not None
    assert recheck.low <= 0.3 and recheck.high > 0.7  # the whole borderline share
    assert (recheck.agreed, recheck.disagreed) == (1.0, 0.0)
    band = (p >= recheck.low) & (p < recheck.high)
    final = np.where(band, np.where(agreed, recheck.agreed, recheck.disagreed), p)
    assert np.mean(final[negative] >= threshold) <= 0.01
    assert np.all((final >= threshold) == (right > 0))


def test_no_recheck_where_rehearing_tells_nothing() -> None:
    p, right, negative = _borderline_clips()
    agreed = np.ones(len(p), bool)  # everything is heard the same: no information
    threshold = choose_threshold(p, right, negative)
    assert choose_recheck(p, right, negative, agreed, threshold) is None


def test_noisy_copies_keep_labels_and_sit_at_the_calibration_snrs() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    speech = [
        (0.3 * np.sin(2 * np.pi * f * t) * np.hanning(t.size)).astype(np.float32)
        for f in (200.0, 300.0, 450.0)
    ]
    items = [
        Item(a, intent, {"n": i}, "x")
        for i, (a, intent) in enumerate(zip(speech, ["On", None, "Off"], strict=True))
    ]
    noises = [
        rng.normal(0, 0.1, 40000).astype(np.float32),
        rng.uniform(-1, 1, 8000).astype(np.float32),
    ]
    first = list(in_noise(items, noises, np.random.default_rng(5)))
    again = list(in_noise(items, noises, np.random.default_rng(5)))
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(first, again, strict=True))
    for clean, noisy in zip(items, first, strict=True):
        assert (noisy.expected_intent, noisy.expected_slots, noisy.text) == (
            clean.expected_intent,
            clean.expected_slots,
            clean.text,
        )
        assert noisy.audio.shape == clean.audio.shape and noisy.audio.dtype == np.float32
        added = noisy.audio - clean.audio
        snr = 10 * np.log10(speech_power(clean.audio) / speech_power(added))
        assert min(abs(snr - s) for s in NOISY_SNRS) < 0.5, snr
