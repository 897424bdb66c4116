"""A second listen for borderline answers: the same audio played slightly slower and faster.

An answer the model is sure of stays sure when the voice is 5% slower or higher; one it half
guessed tends to change. So when the calibrated confidence of an answer falls in a band
around the bar, the utterance is decoded again at a few speed factors (tempo and pitch
together, as training's speed perturbation) and the answer is kept only if every rehearing
gives the same intent and slots. The band and the confidence given to agreeing and
disagreeing answers are fitted by tools/calibrate.py on the calibration clips, under the same
1% false-accept limit as the bar. Measured on held-out voices (tools/NOTES.md, "A second listen"):
more right answers accepted and fewer wrong ones, for two more decodes of the borderline
share of commands.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Slower and faster by 5%: inside the 0.9-1.1 training perturbation, far enough to move an
# answer that is a guess. 0.9 / 1.1 moved right answers too (tools/NOTES.md, "A second listen").
SPEED_FACTORS = (0.95, 1.05)


# Samples resampled at a time: np.interp works in float64 on whole arrays, and over a 5 s
# utterance at once its temporaries raised the daemon's peak memory by ~4 MB.
_BLOCK = 8192


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """The audio played ``factor`` times as fast (tempo and pitch together, like training's
    speed perturbation in tools/augment.py): 1.05 is 5% faster and higher.

    Linear interpolation, not soxr as in training: the daemon would load soxr only for this,
    and soxr, or numpy's FFT resampling, raised its peak memory by 3-9 MB against the 80 MB it
    may use (measured 2026-12-06). Its slight loss of the highest frequencies (~3 dB near
    7 kHz at these factors) is the same for every rehearing, and the band of confidences that
    are heard again is fitted with it."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    length = round(audio.size / factor)
    if audio.size < 2 or length < 1:
        return audio.copy()
    out = np.empty(length, np.float32)
    for lo in range(0, length, _BLOCK):
        positions = np.arange(lo, min(lo + _BLOCK, length), dtype=np.float64) * factor
        first, last = int(positions[0]), min(int(positions[-1]) + 2, audio.size)
        out[lo : lo + positions.size] = np.interp(
            positions, np.arange(first, last), audio[first:last]
        )
    return out


@dataclass(frozen=True)
class Recheck:
    """When and how to listen again (a bundle's ``calibration.recheck``): answers whose
    confidence is in [low, high) are decoded again at ``factors``; their confidence then
    becomes ``agreed`` (P(right) of calibration answers every rehearing agreed with) or
    ``disagreed``, and the usual bar decides."""

    low: float
    high: float
    agreed: float
    disagreed: float
    factors: tuple[float, ...] = SPEED_FACTORS

    def __post_init__(self) -> None:
        if not (0.0 <= self.low <= self.high <= 1.0) or not self.factors:
            raise ValueError(f"recheck band [{self.low}, {self.high}) or factors unusable")
        if not all(0.5 < f < 2.0 for f in self.factors):
            raise ValueError(f"recheck speed factors {self.factors} outside 0.5-2")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recheck:
        return cls(
            low=float(data["low"]),
            high=float(data["high"]),
            agreed=float(data["agreed"]),
            disagreed=float(data["disagreed"]),
            factors=tuple(float(f) for f in data.get("factors", SPEED_FACTORS)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "factors": list(self.factors)}

    def needed(self, confidence: float) -> bool:
        return self.low <= confidence < self.high

    def confidence(self, agreed: bool) -> float:
        return self.agreed if agreed else self.disagreed
