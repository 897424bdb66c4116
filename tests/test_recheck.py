"""The second listen's parts: playing audio faster or slower, and the band a bundle names."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.features import SAMPLE_RATE
from assistant.recheck import Recheck, change_speed


def _pitch_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.argmax(spectrum) * SAMPLE_RATE / audio.size)


@pytest.mark.parametrize("factor", [0.95, 1.05])
def test_a_voice_played_faster_is_shorter_and_higher(factor: float) -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    played = change_speed(tone, factor)
    assert played.dtype == np.float32
    assert played.size == round(SAMPLE_RATE / factor)
    assert _pitch_hz(played) == pytest.approx(440.0 * factor, abs=2.0)
    # linear interpolation keeps a voice's band (here 440 Hz) at its level
    assert np.sqrt(np.mean(played**2)) == pytest.approx(np.sqrt(np.mean(tone**2)), rel=0.01)


def test_audio_too_short_to_resample_comes_back_as_it_was() -> None:
    assert change_speed(np.zeros(0, np.float32), 1.05).size == 0
    assert change_speed(np.ones(1, np.float32), 0.95).tolist() == [1.0]


def test_a_band_round_trips_through_the_manifest() -> None:
    recheck = Recheck(0.5, 0.85, 0.8059, 0.3704)
    assert Recheck.from_dict(recheck.to_dict()) == recheck
    assert recheck.needed(0.5) and recheck.needed(0.84) and not recheck.needed(0.85)
    assert not recheck.needed(0.49)
    assert (recheck.confidence(True), recheck.confidence(False)) == (0.8059, 0.3704)
