"""Synthetic non-speech sounds for calibration: tones, beeps, alarms, sweeps, DTMF, clicks.

A recogniser decoding within a grammar always finds *some* command in a steady tone, and the
real dev data holds no tones, so the calibrator never learns to reject them. These clips are
the negatives it was missing. They are deterministic (a seed per clip, so ``sounds(50)`` is
the first 50 of ``sounds(200)``) and 16 kHz float32 in [-1, 1] like ``tools.corpus.load_audio``.

No component of any clip sits near 440 Hz or 1 kHz: tests/test_audio_hostile.py plays those
tones, and it stays an honest held-out check only if calibration never saw them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RATE = 16000
AVOID_HZ = (440.0, 1000.0)
AVOID_WIDTH = 0.05  # relative: no tone or harmonic within 5% of an avoided frequency
KINDS = ("steady", "beeping", "alarm", "sweep", "dtmf", "clicks")
MIN_SECONDS, MAX_SECONDS = 0.5, 3.0  # of the sound itself
ONSET_SHARE = 0.6  # clips with quiet before (up to MAX_LEAD_S) and after (MAX_TAIL_S) it
MAX_LEAD_S, MAX_TAIL_S = 2.0, 0.6
MIN_DBFS = -45.0  # peak level of the quietest clips; a few are at full scale

Rng = np.random.Generator


@dataclass(frozen=True)
class Sound:
    name: str  # e.g. "beeping 523 Hz -12 dBFS", for logs and test messages
    audio: np.ndarray  # float32, RATE Hz, mono


def is_clear(freqs: list[float]) -> bool:
    """No frequency within AVOID_WIDTH of an avoided one."""
    return all(abs(f - a) > AVOID_WIDTH * a for f in freqs for a in AVOID_HZ)


def _pick(rng: Rng, low: float, high: float, harmonics: Callable[[float], list[float]]) -> float:
    """Log-uniform frequency whose components all stay clear of AVOID_HZ."""
    while True:
        f = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        if is_clear(harmonics(f)):
            return f


def _pure(f: float) -> list[float]:
    return [f]


def _odd_harmonics(f: float) -> list[float]:
    return [k * f for k in range(1, int(RATE / 2 / f) + 1, 2)]


def _sine(freq: float | np.ndarray, n: int) -> np.ndarray:
    # Integrating the frequency keeps the phase continuous when it changes (sweeps, warbles).
    inst = np.broadcast_to(np.asarray(freq, np.float64), (n,))
    return np.sin(2 * np.pi * np.cumsum(inst) / RATE)


def _gate(rng: Rng, n: int) -> np.ndarray:
    """On/off pattern of a beeping alarm, with 5 ms ramps so only the tone is heard."""
    period = int(rng.uniform(0.1, 1.0) * RATE)
    on = int(period * rng.uniform(0.3, 0.7))
    gate = (np.arange(n) % period < on).astype(np.float64)
    ramp = np.hanning(2 * int(0.005 * RATE) + 1)
    return np.convolve(gate, ramp / ramp.sum(), mode="same")


def _steady(rng: Rng, n: int) -> tuple[str, np.ndarray]:
    f = _pick(rng, 150.0, 6000.0, _pure)
    return f"steady {f:.0f} Hz", _sine(f, n)


def _beeping(rng: Rng, n: int) -> tuple[str, np.ndarray]:
    f = _pick(rng, 300.0, 5000.0, _pure)
    return f"beeping {f:.0f} Hz", _sine(f, n) * _gate(rng, n)


def _alarm(rng: Rng, n: int) -> tuple[str, np.ndarray]:
    """Square-ish (odd harmonics, band-limited so none folds back), steady, beeping or a
    two-pitch warble like a siren."""
    f1 = _pick(rng, 200.0, 3000.0, _odd_harmonics)
    f2 = _pick(rng, 200.0, 3000.0, _odd_harmonics)
    style = str(rng.choice(["steady", "beeping", "warble"]))
    if style == "warble":
        hop = int(rng.uniform(0.15, 0.6) * RATE)
        freq = np.where(np.arange(n) // hop % 2 == 0, f1, f2)
        name = f"alarm warble {f1:.0f}/{f2:.0f} Hz"
    else:
        freq, name = np.full(n, f1), f"alarm {style} {f1:.0f} Hz"
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    top = int(RATE / 2 / max(f1, f2))
    wave = sum(np.sin(k * phase) / k for k in range(1, top + 1, 2))
    if style == "beeping":
        wave = wave * _gate(rng, n)
    return name, np.asarray(wave)


def _sweep(rng: Rng, n: int) -> tuple[str, np.ndarray]:
    """Exponential sweeps, once or repeated (a siren); they may pass 440 Hz or 1 kHz but
    never dwell there."""
    f0, f1 = _pick(rng, 150.0, 5000.0, _pure), _pick(rng, 150.0, 5000.0, _pure)
    while abs(np.log(f1 / f0)) < np.log(2):  # at least an octave: a sweep, not a tone
        f1 = _pick(rng, 150.0, 5000.0, _pure)
    repeats = int(rng.integers(1, 5))
    pos = (np.arange(n) * repeats / n) % 1.0
    return f"sweep {f0:.0f}->{f1:.0f} Hz x{repeats}", _sine(f0 * (f1 / f0) ** pos, n)


def _dtmf(rng: Rng, n: int) -> tuple[str, np.ndarray]:
    """Two tones at once from DTMF-like low and high groups, held or keyed in bursts."""
    lo, hi = _pick(rng, 650.0, 960.0, _pure), _pick(rng, 1150.0, 1700.0, _pure)
    wave = 0.5 * (_sine(lo, n) + _sine(hi, n))
    if rng.random() < 0.5:
        return f"dtmf {lo:.0f}+{hi:.0f} Hz keyed", wave * _gate(rng, n)
    return f"dtmf {lo:.0f}+{hi:.0f} Hz held", wave


def _clicks(rng: Rng, n: int) -> tuple[str, np.ndarray]:
    """Short decaying noise bursts (ticks, relays, tapping), regular or at random times."""
    rate = float(rng.uniform(2.0, 25.0))
    if rng.random() < 0.5:
        starts = np.arange(0, n, int(RATE / rate))
        style = "regular"
    else:
        starts = np.sort(rng.integers(0, n, max(1, int(rate * n / RATE))))
        style = "random"
    length = int(rng.uniform(0.001, 0.01) * RATE)
    wave = np.zeros(n + length)
    for s in starts:
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
        wave[s : s + length] += burst
    return f"clicks {style} {rate:.0f}/s", wave[:n]


MAKERS = {
    "steady": _steady,
    "beeping": _beeping,
    "alarm": _alarm,
    "sweep": _sweep,
    "dtmf": _dtmf,
    "clicks": _clicks,
}


def sound(index: int, seed: int = 0) -> Sound:
    """Clip ``index``: kinds take turns, so any count holds all kinds about equally."""
    rng = np.random.default_rng([seed, index])
    kind = KINDS[index % len(KINDS)]
    n = int(rng.uniform(MIN_SECONDS, MAX_SECONDS) * RATE)
    name, wave = MAKERS[kind](rng, n)
    # A spread of levels, from barely above a quiet room to full scale.
    dbfs = 0.0 if rng.random() < 0.15 else float(rng.uniform(MIN_DBFS, 0.0))
    peak = float(np.max(np.abs(wave)))
    audio = wave / peak * 10 ** (dbfs / 20) if peak > 0 else wave
    name = f"{name} {dbfs:.0f} dBFS"
    # Most start out of quiet, as a VAD utterance (its pre-roll) or a window of a longer
    # recording does: a tone's onset after silence is what the decoder most readily hears as
    # a word ("four", "stop").
    if rng.random() < ONSET_SHARE:
        # Log-uniform: mostly a VAD's pre-roll (~0.3 s), sometimes seconds of quiet.
        lead = float(np.exp(rng.uniform(np.log(0.1), np.log(MAX_LEAD_S))))
        tail = rng.uniform(0.0, MAX_TAIL_S)
        audio = np.concatenate([np.zeros(int(lead * RATE)), audio, np.zeros(int(tail * RATE))])
        name += f", after {lead:.1f} s quiet"
    # Half with a faint microphone noise floor, half with the digital silence of a file.
    if rng.random() < 0.5:
        audio = audio + rng.standard_normal(audio.size) * 10 ** (rng.uniform(-80, -65) / 20)
    return Sound(name, np.clip(audio, -1.0, 1.0).astype(np.float32))


def sounds(count: int, seed: int = 0) -> list[Sound]:
    return [sound(i, seed) for i in range(count)]
