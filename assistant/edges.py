"""The room around an utterance's words, as the model learned it: a lead-in and tail for
utterances cut tight to their speech, and no more than ROOM_KEEP_S for those with more.

The daemon's VAD hands the recogniser each utterance with 300 ms of pre-roll, and the model
learned from recordings that start and end before and after the words. A file cut at its
first and last loud sample (FSDD's recordings are; so are clips trimmed by an editor or
another VAD) reaches it without them, and the model then mishears the first and last phones:
on the dev speakers, Speech Commands keywords trimmed to their speech were accepted and
right 60.7% of the time, against 96.3% as recorded. An end whose first (or last) 100 ms
hold a frame within LOUD_EDGE_DB of the loudest gets 0.3 s of what a pre-roll would have
held: digital silence in clean audio, and noise of the colour and level of the utterance's
quietest frames in noisy audio (silence next to noise is a false onset: it cost noisy
commands up to 37 points). Trimmed dev keywords: 84.4% with the first 30 ms as the edge
(version 2.4), 90.2% with 100 ms (session 29; 20 ms of pre-roll is still too little for the
model); untrimmed audio, clean or noisy, within 2.5 points of before (`tools.evaluate --split
dev --channel trimmed`, tools/NOTES.md, "Cut recordings" and "How much of an end is its
edge").

The other way round, an utterance with more room than that (the VAD's hang-over, a file with
seconds of quiet around the command) is cut back to ROOM_KEEP_S a side (without_long_room).
"""

from __future__ import annotations

import numpy as np

FRAME = 160  # 10 ms at 16 kHz
# An edge is the first or last 100 ms: speech that loud so soon had less pre-roll than the
# model learned with (30 ms until session 29; 200 ms took dev keywords as recorded down
# 1 point).
EDGE_FRAMES = 10
LOUD_EDGE_DB = 15.0  # an edge within this of the loudest frame was cut mid-speech
CLEAN_FLOOR_DB = 25.0  # clean: the quietest tenth of the frames lies further under the loudest
QUIET_EDGE_S = 0.3  # as much as the VAD's pre-roll keeps
# Room kept before the first and after the last frame within ROOM_SPAN_DB of the loudest
# (without_long_room). The VAD's cut holds more: its 300 ms pre-roll starts before its first
# voiced frame, which webrtcvad flags late, and its hang-over is 600 ms.
ROOM_SPAN_DB = 25.0
ROOM_KEEP_S = 0.4


# Frames whose levels are taken at a time: a whole utterance's float64 squares at once were
# ~1.3 MB of a long command's second listen's peak memory (each frame's mean is its own).
_LEVEL_BLOCK = 64


def _frames(audio: np.ndarray) -> np.ndarray:
    """[count, FRAME]: whole 10 ms frames (one zero-padded frame for shorter audio); a view
    of ``audio`` where it holds one frame or more."""
    if audio.size < FRAME:
        return np.pad(audio, (0, FRAME - audio.size)).reshape(1, FRAME)
    count = audio.size // FRAME
    return audio[: count * FRAME].reshape(count, FRAME)


def _levels_db(frames: np.ndarray) -> np.ndarray:
    power = np.empty(len(frames))
    for lo in range(0, len(frames), _LEVEL_BLOCK):
        block = frames[lo : lo + _LEVEL_BLOCK].astype(np.float64)
        power[lo : lo + _LEVEL_BLOCK] = (block**2).mean(axis=1)
    return 10.0 * np.log10(power + 1e-12)


def frame_levels_db(audio: np.ndarray) -> np.ndarray:
    """Mean power of each 10 ms frame in dB (0 dB: full scale of float audio in [-1, 1])."""
    return _levels_db(_frames(audio))


def speech_span(levels: np.ndarray, within_db: float) -> tuple[int, int]:
    """(first, last + 1): the frames from the first to the last whose level lies within
    ``within_db`` of the loudest."""
    loud = np.flatnonzero(levels > levels.max() - within_db)
    return int(loud[0]), int(loud[-1]) + 1


def _loud_edges(levels: np.ndarray) -> tuple[bool, bool]:
    threshold = levels.max() - LOUD_EDGE_DB
    return (
        bool(levels[:EDGE_FRAMES].max() > threshold),
        bool(levels[-EDGE_FRAMES:].max() > threshold),
    )


def _is_clean(levels: np.ndarray) -> bool:
    return bool(np.percentile(levels, 10) < levels.max() - CLEAN_FLOOR_DB)


def loud_edges(audio: np.ndarray) -> tuple[bool, bool]:
    """(starts loud, ends loud): whether each end of the utterance was cut mid-speech."""
    return _loud_edges(frame_levels_db(audio))


def is_clean(audio: np.ndarray) -> bool:
    return _is_clean(frame_levels_db(audio))


def comfort_noise(
    frames: np.ndarray, levels: np.ndarray, size: int, share: float = 0.1
) -> np.ndarray:
    """``size`` samples of noise with the spectrum and power of the quietest ``share`` of the
    frames: the room a pre-roll would have recorded. Seeded, so that recognition stays
    deterministic."""
    if size == 0:  # no room wanted (an FFT of no points is an error)
        return np.zeros(0, frames.dtype)
    quiet = max(3, int(levels.size * share))
    quietest = frames[np.argsort(levels)[:quiet]].astype(np.float64)
    colour = np.mean(np.abs(np.fft.rfft(quietest * np.hanning(FRAME), axis=1)) ** 2, axis=0)
    white = np.fft.rfft(np.random.default_rng(0).standard_normal(size))
    gain = np.sqrt(np.interp(np.linspace(0, 1, white.size), np.linspace(0, 1, colour.size), colour))
    noise = np.fft.irfft(white * gain, n=size)
    noise *= np.sqrt(np.mean(quietest**2) / (np.mean(noise**2) + 1e-20))
    return noise.astype(frames.dtype)


def without_long_room(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Float mono audio with at most ROOM_KEEP_S of room kept before and after its speech
    (the frames within ROOM_SPAN_DB of the loudest); audio with no more than that is
    returned as it is. The model learned from recordings with a few tenths of a second of
    room around the words, and mishears them in more: the dev speakers' keywords with 0.3 s
    of their own room looped before them and 0.6 s after (what the VAD's cut can add) were
    right 92.0% of the time against 99.6% as recorded, and 97.7% cut back to 0.3 s a side.
    As the daemon hears them (tools.evaluate --channel stream), dev keywords 93.4 -> 95.4%
    and dev AN4 WER 11.1 -> 9.5% with 0.4 s; as recorded within one clip (tools/NOTES.md,
    "Long room")."""
    first, end = speech_span(frame_levels_db(audio), ROOM_SPAN_DB)
    keep = int(ROOM_KEEP_S * sample_rate)
    start = max(0, first * FRAME - keep)
    stop = min(audio.size, end * FRAME + keep)
    if start == 0 and stop == audio.size:
        return audio
    return audio[start:stop]


def with_quiet_edges(
    audio: np.ndarray, sample_rate: int = 16000, max_samples: int | None = None
) -> np.ndarray:
    """Float mono audio, with QUIET_EDGE_S of lead-in or tail added at each end that was cut
    mid-speech; audio whose ends are already quiet is returned as it is. With
    ``max_samples`` (the longest input the model hears) the additions shrink to fit: a long
    command must not become "longer than one command" because of them."""
    frames = _frames(audio)
    levels = _levels_db(frames)  # once: the edges, the floor and the noise all read them
    head, tail = _loud_edges(levels)
    if not (head or tail):
        return audio
    size = int(QUIET_EDGE_S * sample_rate)
    if max_samples is not None:
        size = max(0, min(size, (max_samples - audio.size) // (head + tail)))
    if size == 0:
        return audio
    clean = _is_clean(levels)
    pad = np.zeros(size, audio.dtype) if clean else comfort_noise(frames, levels, size)
    # The tail's noise runs backwards: the two ends are not one waveform repeated.
    return np.concatenate([pad[: size * head], audio, pad[::-1][: size * tail]])
