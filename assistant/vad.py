"""Segmenter: a stream of 16 kHz frames in, whole utterances out (webrtcvad underneath).

Idle, it keeps the last `pre_roll_ms` of audio so that when speech is detected the first
syllables (which webrtcvad is slow to flag) are part of the utterance. Speech starts when enough
of the recent frames are voiced, which keeps a single click or a steady hiss from opening an
utterance; it ends after `hangover_ms` without voice. Utterances shorter than `min_utterance_ms`
of speech are dropped; one that reaches `max_utterance_ms` is cut and emitted.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from .audio import SAMPLE_RATE, frame_samples

_FLOOR_WINDOW_S = 3.0  # a steady noise that starts suddenly is learnt within this time
_FLOOR_MIN_DB = 20.0  # int16 power in dB; below this is digital near-silence, not a noise floor


@dataclass(frozen=True)
class VadSettings:
    aggressiveness: int = 3  # webrtcvad 0 (lenient) .. 3 (strict about what is speech)
    frame_ms: int = 30
    pre_roll_ms: int = 300
    hangover_ms: int = 600
    # Voiced span from first to last voiced frame; 90 ms is what the start rule itself needs
    # (3 of the 10 frames of its window). 120 ms (until session 32) dropped short, quiet words:
    # 25 of 167 FSDD digits of train speakers, even in digital silence (tools.evaluate
    # --channel stream; tools/NOTES.md, "The VAD's shortest utterance").
    min_utterance_ms: int = 90
    max_utterance_ms: int = 8000  # the model's longest input (8 s)
    start_window_ms: int = 300  # speech starts when `start_ratio` of this window is voiced
    start_ratio: float = 0.3
    min_snr_db: float = 12.0  # a voiced frame must be this far above the noise floor (0: off)

    def validate(self) -> list[tuple[str, str]]:
        """(key, problem) pairs; empty when valid."""
        problems = []
        if self.aggressiveness not in (0, 1, 2, 3):
            problems.append(("aggressiveness", "must be 0, 1, 2 or 3"))
        if self.frame_ms not in (10, 20, 30):
            problems.append(("frame_ms", "must be 10, 20 or 30"))
        for key in ("pre_roll_ms", "hangover_ms", "min_utterance_ms"):
            if getattr(self, key) < 0:
                problems.append((key, "must not be negative"))
        if self.max_utterance_ms < max(self.min_utterance_ms, self.frame_ms):
            problems.append(("max_utterance_ms", "must be at least min_utterance_ms"))
        if self.start_window_ms < self.frame_ms:
            problems.append(("start_window_ms", "must be at least one frame"))
        if self.min_snr_db < 0:
            problems.append(("min_snr_db", "must not be negative"))
        if not 0.0 < self.start_ratio <= 1.0:
            problems.append(("start_ratio", "must be in (0, 1]"))
        return problems


@dataclass(frozen=True)
class Utterance:
    pcm: np.ndarray  # int16, 16 kHz mono, pre-roll and hang-over included
    start_s: float  # stream time of the first sample
    end_s: float  # stream time just after the last sample
    closed_at: float = 0.0  # time.monotonic() when the segmenter emitted it (latency origin)
    opened_at: float = 0.0  # time.monotonic() when the segmenter heard it begin

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


class Segmenter:
    def __init__(self, settings: VadSettings = VadSettings()) -> None:
        problems = settings.validate()
        if problems:
            raise ValueError("; ".join(f"vad.{key} {why}" for key, why in problems))
        self.settings = settings
        self._vad = webrtcvad.Vad(settings.aggressiveness)
        self._size = frame_samples(settings.frame_ms)
        ms = settings.frame_ms
        self._pre_roll = max(1, settings.pre_roll_ms // ms)
        self._window = max(1, settings.start_window_ms // ms)
        self._needed = max(1, int(np.ceil(settings.start_ratio * self._window)))
        self._hangover = max(1, settings.hangover_ms // ms)
        self._min_frames = settings.min_utterance_ms // ms
        self._max_frames = max(1, settings.max_utterance_ms // ms)
        self._position = 0  # samples seen since the stream began
        # Noise floor by minimum statistics: the quietest ~100 ms block of the last few seconds.
        self._block_frames = max(1, 100 // ms)
        self._blocks: deque[float] = deque(maxlen=max(1, int(_FLOOR_WINDOW_S * 10)))
        self._block_energy = 0.0
        self._block_count = 0
        self.reset()

    @property
    def active(self) -> bool:
        """True while an utterance is in progress."""
        return self._in_speech

    @property
    def opened_at(self) -> float | None:
        """time.monotonic() when the utterance in progress began; None when none is."""
        return self._opened_at if self._in_speech else None

    def reset(self) -> None:
        """Forget any utterance in progress (e.g. while the assistant itself is speaking)."""
        self._recent: deque[tuple[np.ndarray, bool]] = deque(maxlen=self._pre_roll + self._window)
        self._frames: list[np.ndarray] = []
        self._in_speech = False
        self._opened_at = 0.0
        self._start = 0
        self._voiced_frames = 0  # frames from the first voiced one to the last, in the utterance
        self._silence_run = 0

    def skip(self, samples: int) -> None:
        """Advance stream time without listening (muted audio) and drop what was in progress."""
        self._position += samples
        self.reset()

    def feed(self, frame: np.ndarray) -> Utterance | None:
        """One frame of `frame_ms` in; an Utterance out when one just ended, else None."""
        if frame.size != self._size:
            raise ValueError(f"expected {self._size} samples per frame, got {frame.size}")
        voiced = self._is_voiced(frame)
        self._position += frame.size
        if not self._in_speech:
            self._recent.append((frame, voiced))
            window = list(self._recent)[-self._window :]
            if sum(v for _, v in window) < self._needed:
                return None
            self._start_utterance()
            return None
        self._frames.append(frame)
        if voiced:
            self._voiced_frames += self._silence_run + 1
            self._silence_run = 0
        else:
            self._silence_run += 1
        if len(self._frames) >= self._max_frames:
            return self._finish()
        if self._silence_run >= self._hangover:
            return self._finish()
        return None

    def _is_voiced(self, frame: np.ndarray) -> bool:
        # Cheap USB microphones add a DC offset: measure (and let webrtcvad judge) the frame
        # without it, or a constant offset counts as loud "speech" energy.
        centred = frame.astype(np.float64) - float(np.mean(frame))
        energy = float(np.mean(np.square(centred)))
        if self.settings.min_snr_db:
            # webrtcvad alone calls the clank of an exercise bike or a running tap "speech"; a
            # steady noise never stands `min_snr_db` above the floor it sets itself.
            level_db = 10.0 * np.log10(energy + 1.0)
            floor_db = self._update_floor(energy)
            if level_db < floor_db + self.settings.min_snr_db:
                return False
        pcm = np.clip(np.rint(centred), -32768, 32767).astype("<i2")
        return self._vad.is_speech(pcm.tobytes(), SAMPLE_RATE)

    def _update_floor(self, energy: float) -> float:
        self._block_energy += energy
        self._block_count += 1
        if self._block_count == self._block_frames:
            self._blocks.append(self._block_energy / self._block_count)
            self._block_energy, self._block_count = 0.0, 0
        if not self._blocks:
            floor = self._block_energy / max(1, self._block_count)
        else:
            floor = min(self._blocks)
        return max(_FLOOR_MIN_DB, 10.0 * np.log10(floor + 1.0))

    def flush(self) -> Utterance | None:
        """End of stream: emit the utterance in progress, if it is long enough."""
        return self._finish() if self._in_speech else None

    def _start_utterance(self) -> None:
        recent = list(self._recent)
        window_start = len(recent) - min(self._window, len(recent))
        first_voiced = next(i for i in range(window_start, len(recent)) if recent[i][1])
        # Keep `pre_roll` frames before the first voiced one: webrtcvad flags speech late.
        kept = recent[max(0, first_voiced - self._pre_roll) :]
        self._frames = [f for f, _ in kept]
        voiced_at = [i for i, (_, v) in enumerate(kept) if v]
        self._voiced_frames = voiced_at[-1] - voiced_at[0] + 1
        self._silence_run = len(kept) - 1 - voiced_at[-1]
        self._start = self._position - len(self._frames) * self._size
        self._in_speech = True
        self._opened_at = time.monotonic()
        self._recent.clear()

    def _finish(self) -> Utterance | None:
        frames, voiced, start = self._frames, self._voiced_frames, self._start
        opened_at = self._opened_at
        self.reset()
        if voiced < self._min_frames or not frames:
            return None
        pcm = np.concatenate(frames)
        return Utterance(
            pcm=pcm,
            start_s=start / SAMPLE_RATE,
            end_s=(start + pcm.size) / SAMPLE_RATE,
            closed_at=time.monotonic(),
            opened_at=opened_at,
        )
