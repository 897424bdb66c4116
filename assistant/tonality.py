"""Is this sound a steady tone (a beep, an alarm, a whistle kettle) rather than speech?

The recogniser maps every sound onto the phones it knows, and a pure tone looks to it like
a confidently spoken vowel ("four", "stop"): the confidence features cannot tell it from a
right command. A tone is easy to tell from speech in the spectrum instead: nearly all of its
energy sits in one frequency that does not move, while a voice spreads its energy over many
harmonics and formants and its pitch wanders. No library offers this check; it is a few
lines of numpy on the spectrum the features are computed from anyway.
"""

from __future__ import annotations

import numpy as np

from .features import FeatureParams

# Measured on the train split of ../shared/data (11.8k real utterances, five corpora): speech
# scores at most 0.943 (a child's monotone "on"), 0.878 at the 99.9th percentile; pure tones
# of any level and pitch from 150 Hz to 6 kHz score 0.999-1.000.
STEADY_TONE_THRESHOLD = 0.975
PEAK_BINS = 2  # each side of the strongest bin: a Hann window spreads a tone over ~5 bins
MIN_HZ = 80.0  # below: mains hum and rumble, present under speech too
DEFAULT_PARAMS = FeatureParams()
ACTIVE_DB = 30.0  # frames within this of the loudest frame are the sound; the rest is pause
_ROWS = 128  # frames whose strongest bin is found at a time


def steady_tone_score(spectrum: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> float:
    """0..1: the smaller of (a) the median share of a frame's energy in its strongest
    frequency (5 FFT bins, 156 Hz) and (b) the share of frames whose strongest frequency is the
    sound's usual one. Speech is low on both; a steady tone is near 1 on both."""
    low = int(np.ceil(MIN_HZ * params.n_fft / params.sample_rate))
    # Views and row indices, no copies of the band: two copies of a long command's spectrum
    # (~1 MB each) were most of its second listen's peak memory (tools/NOTES.md, "A second listen").
    band = spectrum[:, low:]
    width = band.shape[1]
    energy = band.sum(axis=1)
    if band.size == 0 or energy.max() <= 0:
        return 0.0
    rows = np.flatnonzero(energy > energy.max() * 10 ** (-ACTIVE_DB / 10))
    # argmax copies a strided view whole first: in blocks of rows, that copy stays small
    peak = np.concatenate(
        [band[lo : lo + _ROWS].argmax(axis=1) for lo in range(0, len(band), _ROWS)]
    )[rows]
    # the strongest bin and PEAK_BINS each side of it, bins past the band's ends counting 0
    in_peak = sum(
        np.where((col >= 0) & (col < width), band[rows, np.clip(col, 0, width - 1)], 0.0)
        for col in (peak + offset for offset in range(-PEAK_BINS, PEAK_BINS + 1))
    )
    concentration = float(np.median(in_peak / energy[rows]))
    usual = np.bincount(peak).argmax()
    steadiness = float(np.mean(np.abs(peak - usual) <= 1))
    return min(concentration, steadiness)


def is_steady_tone(spectrum: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> bool:
    return steady_tone_score(spectrum, params) >= STEADY_TONE_THRESHOLD
