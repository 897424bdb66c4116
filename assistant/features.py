"""Log-mel features: the one implementation, used by training (tools/) and runtime.

numpy only, so that the Pi needs nothing heavier. 25 ms Hann window, 10 ms hop, 40 mel bands,
log energy, then per-utterance mean subtraction (removes microphone/channel colour, which
matters more than anything else for unseen speakers and devices).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
# Frames per FFT call (see power_spectrum). 32, not 64: the same numbers with half the
# temporaries (~0.4 MB of a long command's second listen's peak memory), for ~0.05 ms more a
# 3 s command in the recogniser (interleaved on an older x86 core, 2026-12-06).
_FFT_BLOCK_FRAMES = 32


@dataclass(frozen=True)
class FeatureParams:
    sample_rate: int = SAMPLE_RATE
    n_mels: int = 40
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 512
    fmin: float = 20.0
    fmax: float = 7600.0
    log_floor: float = 1e-6

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureParams:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(params: FeatureParams) -> np.ndarray:
    """Triangular HTK-style mel filters, shape [n_fft // 2 + 1, n_mels]."""
    n_bins = params.n_fft // 2 + 1
    mel_points = np.linspace(
        _hz_to_mel(np.array(params.fmin)), _hz_to_mel(np.array(params.fmax)), params.n_mels + 2
    )
    hz_points = _mel_to_hz(mel_points)
    bin_hz = np.linspace(0.0, params.sample_rate / 2.0, n_bins)
    filters = np.zeros((n_bins, params.n_mels), dtype=np.float32)
    for m in range(params.n_mels):
        left, centre, right = hz_points[m], hz_points[m + 1], hz_points[m + 2]
        rising = (bin_hz - left) / max(centre - left, 1e-6)
        falling = (right - bin_hz) / max(right - centre, 1e-6)
        filters[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    return filters


@lru_cache(maxsize=8)
def _window(params: FeatureParams) -> np.ndarray:
    return np.hanning(params.win_length + 1)[:-1].astype(np.float32)


def to_float_pcm(pcm: np.ndarray) -> np.ndarray:
    """int16 or float audio -> float32 in [-1, 1]."""
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    return np.asarray(pcm, dtype=np.float32)


def num_frames(num_samples: int, params: FeatureParams = FeatureParams()) -> int:
    if num_samples < params.win_length:
        return 1
    return 1 + (num_samples - params.win_length) // params.hop_length


def power_spectrum(pcm: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """Mono 16 kHz audio (int16 or float) -> framed power spectrum, [frames, n_fft // 2 + 1]."""
    audio = to_float_pcm(pcm).reshape(-1)
    if audio.size < params.win_length:
        audio = np.pad(audio, (0, params.win_length - audio.size))
    frames = num_frames(audio.size, params)
    # Strided view of the frames: no copy until the window is applied.
    framed = np.lib.stride_tricks.sliding_window_view(audio, params.win_length)
    framed = framed[:: params.hop_length][:frames]
    window = _window(params)
    spectrum: np.ndarray | None = None
    # Blocks of frames, each frame's FFT being independent: the float64 and complex
    # temporaries of a whole utterance at once (~4 MB for 3 s) would set the daemon's peak RSS.
    for lo in range(0, frames, _FFT_BLOCK_FRAMES):
        windowed = framed[lo : lo + _FFT_BLOCK_FRAMES] * window
        block = np.abs(np.fft.rfft(windowed, n=params.n_fft, axis=1)) ** 2
        if spectrum is None:
            # Kept in float32 whatever the FFT's precision (float64 on numpy 1, Python 3.11;
            # float32 on numpy 2, 3.13, ~0.7 ms faster a 3 s command there): the log-mels
            # take it as float32 anyway, so they are the same to the bit, and numpy 1's
            # float64 copy of an 8 s command was 1.6 MB of the daemon's peak.
            spectrum = np.empty((frames, block.shape[1]), np.float32)
        spectrum[lo : lo + _FFT_BLOCK_FRAMES] = block
    assert spectrum is not None  # frames >= 1
    return spectrum


def log_mel_from_power(spectrum: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    mel = spectrum.astype(np.float32, copy=False) @ mel_filterbank(params)
    logmel = np.log(mel + params.log_floor)
    return (logmel - logmel.mean(axis=0, keepdims=True)).astype(np.float32)


def log_mel(pcm: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """Mono 16 kHz audio (int16 or float) -> mean-normalised log-mel, shape [frames, n_mels]."""
    return log_mel_from_power(power_spectrum(pcm, params), params)
