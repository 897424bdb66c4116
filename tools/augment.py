"""Waveform augmentation: speed/pitch perturbation, gain, noise at a chosen SNR, a
narrowband channel, and trimming to the speech.

SNR is defined on speech energy (the loudest 50% of 10 ms frames), so that a clip with long
silences is not made artificially easy.
"""

from __future__ import annotations

import numpy as np
import soxr

from assistant.edges import FRAME, frame_levels_db, speech_span
from assistant.features import SAMPLE_RATE


def speech_power(audio: np.ndarray, frame: int = 160) -> float:
    n = max(1, audio.size // frame)
    frames = audio[: n * frame].reshape(n, -1) if audio.size >= frame else audio[None, :]
    power = (frames.astype(np.float64) ** 2).mean(axis=1)
    loud = np.sort(power)[len(power) // 2 :]
    return float(loud.mean()) + 1e-10


def mix_noise(
    audio: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    if noise.size < audio.size:
        noise = np.tile(noise, audio.size // noise.size + 1)
    start = int(rng.integers(0, noise.size - audio.size + 1))
    piece = noise[start : start + audio.size]
    scale = np.sqrt(speech_power(audio) / (speech_power(piece) * 10 ** (snr_db / 10)))
    return (audio + scale * piece).astype(np.float32)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Resampling-based speed perturbation (tempo and pitch together, as in Kaldi's recipe):
    factor 1.1 plays 10% faster and higher, which imitates a smaller vocal tract."""
    return soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


def random_gain(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    peak = float(np.abs(audio).max()) + 1e-6
    target = 10 ** rng.uniform(-2.0, -0.1)  # -40 .. -1 dBFS peak
    return (audio * (target / peak)).astype(np.float32)


def pad_silence(audio: np.ndarray, rng: np.random.Generator, max_s: float = 0.3) -> np.ndarray:
    """Leading/trailing low-level silence, like the VAD's pre-roll and hang-over."""
    before = int(rng.uniform(0, max_s) * SAMPLE_RATE)
    after = int(rng.uniform(0, max_s) * SAMPLE_RATE)
    floor = rng.normal(0, 1e-4, before + after + audio.size).astype(np.float32)
    floor[before : before + audio.size] += audio
    return floor


NARROW_RATES = (7000.0, 11000.0)  # Nyquist 3.5-5.5 kHz: telephone, 8 kHz mics, cheap codecs
MIC_8K_RATE = 8000.0  # the one fixed narrowband channel: an 8 kHz microphone


def narrow_band(audio: np.ndarray, rate: float) -> np.ndarray:
    """The same audio as it arrives through a channel sampled at ``rate`` (e.g. an 8 kHz USB
    microphone, or a recording such as FSDD's): nothing above rate / 2 survives. soxr's
    anti-alias filter is the channel's low-pass, as in a real 8 kHz capture that the runtime
    resamples back to 16 kHz."""
    down = soxr.resample(audio, SAMPLE_RATE, rate)
    return soxr.resample(down, rate, SAMPLE_RATE).astype(np.float32)[: audio.size]


TRIM_DB = 30.0  # what a tight trim keeps: the frames within this of the loudest


def trim_to_speech(audio: np.ndarray) -> np.ndarray:
    """The clip cut from its first to its last frame within TRIM_DB of its loudest, as an
    editor, a tight VAD or a corpus such as FSDD leaves a recording."""
    first, end = speech_span(frame_levels_db(audio), TRIM_DB)
    return audio[first * FRAME : end * FRAME]
