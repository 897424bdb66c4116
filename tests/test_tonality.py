"""The steady-tone check: beeps and alarms are not speech; real voices never trip it."""

from __future__ import annotations

import numpy as np
import pytest
from shared_data import needs_shared_data

from assistant.features import power_spectrum
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from assistant.tonality import STEADY_TONE_THRESHOLD, is_steady_tone, steady_tone_score
from tools.corpus import DEFAULT_DATA, load_audio, read_manifest

RATE = 16000


def sine(freq: float, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("freq", [150.0, 523.0, 880.0, 2500.0, 6000.0])
@pytest.mark.parametrize("amplitude", [0.003, 0.3, 1.0])
def test_pure_tones_are_steady_tones(freq: float, amplitude: float) -> None:
    assert is_steady_tone(power_spectrum(sine(freq, 1.5, amplitude)))


def test_a_beeping_tone_with_pauses_is_a_steady_tone() -> None:
    beeps = sine(700.0, 3.0, 0.5) * (np.arange(3 * RATE) // (RATE // 4) % 2)
    assert is_steady_tone(power_spectrum(beeps))


def test_silence_and_noise_are_not_tones() -> None:
    rng = np.random.default_rng(0)
    assert steady_tone_score(power_spectrum(np.zeros(RATE, np.float32))) == 0.0
    noise = (0.1 * rng.standard_normal(2 * RATE)).astype(np.float32)
    assert steady_tone_score(power_spectrum(noise)) < 0.2


@needs_shared_data
def test_real_voices_are_never_steady_tones() -> None:
    # Every corpus, test split (the threshold was set on the train split): the check must
    # never reject a person speaking.
    clips = [c for c in read_manifest(DEFAULT_DATA) if c.split == "test"]
    rng = np.random.default_rng(1)
    sample = [clips[i] for i in rng.choice(len(clips), 400, replace=False)]
    scores = {c.path.name: steady_tone_score(power_spectrum(load_audio(c.path))) for c in sample}
    worst = max(scores, key=scores.__getitem__)
    assert scores[worst] < STEADY_TONE_THRESHOLD, worst


def test_recogniser_rejects_a_tone_before_decoding() -> None:
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR)
    decoded = recognizer.decode(sine(440.0, 2.0, 0.5))
    assert decoded.intent is None and decoded.text == ""
    assert "encoder" not in decoded.timings  # no model time spent on it
    assert recognizer.recognize(sine(440.0, 2.0, 0.5)).intent is None
