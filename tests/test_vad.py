"""Segmenter on real recordings: test-split speech in silence and in noise, and pure noise."""

from __future__ import annotations

import numpy as np
import pytest
from shared_data import needs_shared_data

from assistant.audio import FileSource, read_audio
from assistant.vad import Segmenter, Utterance, VadSettings
from tools.corpus import DEFAULT_DATA as DATA
from tools.corpus import Clip, read_manifest

pytestmark = needs_shared_data
STEADY_NOISES = ["white_noise", "pink_noise", "running_tap", "exercise_bike"]


def pick_rows(corpus: str, count: int, min_seconds: float = 0.0) -> list[Clip]:
    rows = [
        c
        for c in read_manifest(DATA)
        if c.split == "test" and c.corpus == corpus and c.text and c.seconds >= min_seconds
    ]
    # Spread over speakers: every n-th row rather than the first few of one speaker.
    return rows[:: max(1, len(rows) // count)][:count]


def segment(pcm: np.ndarray, settings: VadSettings | None = None) -> list[Utterance]:
    settings = settings or VadSettings()
    seg = Segmenter(settings)
    size = 16000 * settings.frame_ms // 1000
    out = []
    for start in range(0, pcm.size - size + 1, size):
        utterance = seg.feed(pcm[start : start + size])
        if utterance is not None:
            out.append(utterance)
    last = seg.flush()
    return out + ([last] if last is not None else [])


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = np.resize(noise, speech.size).astype(np.float64)
    gain = np.sqrt(
        np.mean(speech.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10)
    )
    return np.clip(speech + noise * gain, -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def speech_clips() -> list[np.ndarray]:
    rows = pick_rows("an4", 6, 1.0) + pick_rows("speech_commands_v2_test", 6, 0.9)
    return [read_audio(r.path) for r in rows]


@pytest.mark.parametrize("name", STEADY_NOISES)
def test_steady_noise_yields_nothing(name: str) -> None:
    pcm = read_audio(DATA / "noise" / f"{name}.flac")
    assert segment(pcm) == []


def test_digital_silence_yields_nothing() -> None:
    assert segment(np.zeros(16000 * 30, dtype=np.int16)) == []


@pytest.mark.parametrize("noise", [None, "running_tap", "white_noise"])
def test_each_command_is_one_utterance_with_its_onset(
    speech_clips: list[np.ndarray], noise: str | None
) -> None:
    noise_pcm = read_audio(DATA / "noise" / f"{noise}.flac") if noise else None
    for clip in speech_clips:
        lead = 16000  # 1 s before the command
        padded = np.concatenate([np.zeros(lead, np.int16), clip, np.zeros(16000, np.int16)])
        if noise_pcm is not None:
            padded = mix(padded, noise_pcm, 20.0)
        found = segment(padded)
        spans = [(u.start_s, u.end_s) for u in found]
        # A spelled AN4 answer may pause longer than the hang-over and become two utterances;
        # what matters is that the noise around the command opens none.
        assert 1 <= len(found) <= 2, spans
        assert found[0].start_s >= (lead - 16000 * 0.35) / 16000, spans
        assert found[-1].end_s <= (lead + clip.size) / 16000 + 0.75, spans
        utterance = found[0]
        # The first syllable is never clipped: the utterance starts no later than the first
        # sample whose energy stands out from the clip's own start (its onset).
        frames = clip[: clip.size // 160 * 160].reshape(-1, 160).astype(np.float64)
        level = 10 * np.log10(np.mean(frames**2, axis=1) + 1)
        onset = int(np.argmax(level > level.max() - 25)) * 160
        assert utterance.start_s <= (lead + onset) / 16000
        assert utterance.pcm.size == round(utterance.seconds * 16000)


def test_commands_in_a_stream_stay_apart() -> None:
    words = [read_audio(r.path) for r in pick_rows("speech_commands_v2_test", 5, 0.9)]
    gap = np.zeros(16000, np.int16)
    stream = np.concatenate([part for clip in words for part in (gap, clip)] + [gap])
    found = segment(stream)
    assert len(found) == 5
    assert all(a.end_s <= b.start_s for a, b in zip(found, found[1:], strict=False))


def test_max_length_cuts() -> None:
    clip = read_audio(pick_rows("an4", 1, 3.0)[0].path)
    settings = VadSettings(max_utterance_ms=900, min_utterance_ms=60)
    found = segment(np.concatenate([np.zeros(8000, np.int16), clip]), settings)
    assert len(found) >= 2
    assert all(u.seconds <= 0.9 + 1e-9 for u in found)


def test_short_quiet_words_are_heard() -> None:
    """FSDD's theo says his digits in 0.2-0.4 s at about -31 dBFS, and webrtcvad flags only a
    few of their frames. Under the 120 ms minimum of voiced span used until session 32 the
    daemon dropped 14 of these 30 (train-split recordings, each between 1 s of silence); what
    opens an utterance (3 voiced frames of 10) is now enough to keep it: 8 dropped."""
    rows = [c for c in read_manifest(DATA) if c.corpus == "fsdd" and c.speaker == "fsdd-theo"]
    silence = np.zeros(16000, np.int16)
    heard = old_minimum = 0
    for row in rows[::10][:30]:
        played = np.concatenate([silence, read_audio(row.path), silence])
        found = segment(played)
        assert len(found) <= 1
        heard += len(found)
        old_minimum += len(segment(played, VadSettings(min_utterance_ms=120)))
    assert heard >= 20
    assert heard >= old_minimum + 5


def test_short_clicks_are_dropped() -> None:
    pcm = np.zeros(16000 * 3, np.int16)
    rng = np.random.default_rng(0)
    pcm[16000 : 16000 + 480] = rng.normal(0, 8000, 480).astype(np.int16)  # one 30 ms burst
    assert segment(pcm) == []


def test_skip_drops_the_utterance_in_progress(speech_clips: list[np.ndarray]) -> None:
    seg = Segmenter()
    clip = speech_clips[0]
    for start in range(0, clip.size // 2 // 480 * 480, 480):
        seg.feed(clip[start : start + 480])
    assert seg.active
    seg.skip(480)
    assert not seg.active and seg.flush() is None


def test_invalid_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match="vad.aggressiveness"):
        Segmenter(VadSettings(aggressiveness=5))


def test_file_source_frames_feed_the_segmenter() -> None:
    path = pick_rows("an4", 1, 1.0)[0].path
    seg = Segmenter()
    found = [u for u in map(seg.feed, FileSource(path).frames()) if u] + [seg.flush()]
    assert len([u for u in found if u is not None]) >= 1
