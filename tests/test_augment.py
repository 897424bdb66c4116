"""Waveform augmentation on real recordings: the narrowband channel keeps speech below its
cut-off and removes what lies above it."""

from __future__ import annotations

import numpy as np
from shared_data import needs_shared_data

from tools import augment
from tools.corpus import DEFAULT_DATA, load_audio, read_manifest


def _band_power(audio: np.ndarray, lo: float, hi: float) -> float:
    # Hann-windowed frames: one unwindowed FFT would leak the strong low band everywhere.
    frames = audio[: audio.size // 512 * 512].reshape(-1, 512) * np.hanning(512)
    spectrum = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(axis=0)
    hz = np.fft.rfftfreq(512, 1 / 16000)
    return float(spectrum[(hz >= lo) & (hz < hi)].sum()) + 1e-20


@needs_shared_data
def test_an_8_khz_channel_keeps_the_speech_band_and_removes_the_top() -> None:
    clip = next(
        c for c in read_manifest(DEFAULT_DATA) if c.corpus == "speech_commands_v2_test" and c.text
    )
    wide = load_audio(clip.path)
    narrow = augment.narrow_band(wide, 8000.0)
    assert narrow.shape == wide.shape and narrow.dtype == np.float32
    assert _band_power(wide, 4500, 8000) > 1e-6  # the recording has content up there
    top_drop = _band_power(narrow, 4500, 8000) / _band_power(wide, 4500, 8000)
    speech_kept = _band_power(narrow, 100, 3000) / _band_power(wide, 100, 3000)
    assert top_drop < 1e-4  # over 40 dB down
    assert 0.9 < speech_kept < 1.1


def test_a_wider_channel_cuts_higher() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000).astype(np.float32)
    at_7k = augment.narrow_band(noise, 7000.0)
    at_11k = augment.narrow_band(noise, 11000.0)
    # 4-5 kHz passes an 11 kHz channel (Nyquist 5.5) and not a 7 kHz one (Nyquist 3.5).
    assert _band_power(at_11k, 4000, 5000) > 100 * _band_power(at_7k, 4000, 5000)
