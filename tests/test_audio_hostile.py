"""Hostile audio through the real Segmenter and the real Recognizer (models/home bundle).

Clipping, DC offset, pure tones, white noise, digital silence, ten minutes of speech without a
pause, and files at other sample rates. Nothing may crash; noise, tones and silence must give no
intent; no utterance may exceed ``max_utterance_ms``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from shared_data import needs_shared_data

from assistant.audio import FileSource, read_audio
from assistant.bundle import BundleError
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from assistant.result import Result
from assistant.vad import Segmenter, Utterance, VadSettings
from tools.corpus import DEFAULT_DATA, load_audio, read_manifest

RATE = 16000
DEMO = DEFAULT_MODEL_DIR / "demo.wav"  # four spoken home commands in quiet tap noise
FRAME = VadSettings().frame_ms * RATE // 1000
pytestmark = needs_shared_data


# ------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    try:
        return Recognizer.load(DEFAULT_MODEL_DIR)
    except BundleError as exc:
        pytest.skip(f"models/home bundle not usable: {exc}")


@pytest.fixture(scope="module")
def demo() -> np.ndarray:
    if not DEMO.exists():
        pytest.skip("models/home/demo.wav missing")
    return read_audio(DEMO)


def segment(pcm: np.ndarray, settings: VadSettings | None = None) -> list[Utterance]:
    """Feed a whole recording frame by frame, as the daemon's audio loop does."""
    seg = Segmenter(settings or VadSettings())
    size = seg.settings.frame_ms * RATE // 1000
    out = [seg.feed(pcm[i : i + size]) for i in range(0, pcm.size - size + 1, size)]
    out.append(seg.flush())
    return [u for u in out if u is not None]


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


def check_bounded(utterances: list[Utterance], settings: VadSettings | None = None) -> None:
    limit = (settings or VadSettings()).max_utterance_ms / 1000
    for u in utterances:
        assert 0 < u.seconds <= limit + 1e-9, f"{u.seconds:.2f} s utterance (max {limit} s)"
        assert u.pcm.dtype == np.int16 and u.pcm.size == round(u.seconds * RATE)
    ends = [(u.start_s, u.end_s) for u in utterances]
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:], strict=False)), "overlap"


def recognise_all(recognizer: Recognizer, utterances: list[Utterance]) -> list[Result]:
    results = [recognizer.recognize(u.pcm) for u in utterances]
    for r in results:
        assert isinstance(r.text, str) and 0.0 <= r.confidence <= 1.0
        assert r.intent is None or isinstance(r.intent, str)
    return results


def false_intents(recognizer: Recognizer, pcm: np.ndarray) -> list[str]:
    """Intents heard in non-speech: through the VAD (what the daemon does) and, as the worst
    case of a VAD that lets everything in, straight into the recogniser in 5 s pieces."""
    utterances = segment(pcm)
    check_bounded(utterances)
    heard = [
        f"vad {u.start_s:.1f}+{u.seconds:.1f}s: {r.intent} {r.text!r} {r.confidence:.2f}"
        for u, r in zip(utterances, recognise_all(recognizer, utterances), strict=True)
        if r.intent is not None
    ]
    for start in range(0, pcm.size, 5 * RATE):
        r = recognizer.recognize(pcm[start : start + 5 * RATE])
        if r.intent is not None:
            heard.append(f"direct {start / RATE:.0f}s: {r.intent} {r.text!r} {r.confidence:.2f}")
    return heard


def assert_no_intent(recognizer: Recognizer, pcm: np.ndarray) -> None:
    assert false_intents(recognizer, pcm) == []


def tone(freq: float, seconds: float, dbfs: float = -6.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 32768 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)


def with_onset(signal: np.ndarray, quiet_s: float = 2.0) -> np.ndarray:
    """Digital silence first: the sudden start is what could open an utterance."""
    return to_int16(np.concatenate([np.zeros(int(quiet_s * RATE)), signal]))


# ---------------------------------------------------------------- non-speech


def test_digital_silence_gives_nothing(recognizer: Recognizer) -> None:
    silence = np.zeros(60 * RATE, np.int16)
    assert segment(silence) == []
    assert recognizer.recognize(silence[: 3 * RATE]).intent is None
    assert recognizer.recognize(np.zeros(0, np.int16)).intent is None  # empty, not a crash


def tone_signal(freq: float, shape: str) -> np.ndarray:
    if shape == "beeping":  # an alarm: half a second on, half a second off
        return with_onset(tone(freq, 20.0) * (np.arange(20 * RATE) // (RATE // 2) % 2))
    if shape == "full scale":
        return with_onset(tone(freq, 5.0, dbfs=0.0))
    return with_onset(tone(freq, 20.0))


TONES = [(f, s) for f in (440.0, 1000.0) for s in ("steady", "beeping", "full scale")]


@pytest.mark.parametrize("freq,shape", TONES)
def test_tones_through_the_vad_give_no_intent(
    recognizer: Recognizer, freq: float, shape: str
) -> None:
    utterances = segment(tone_signal(freq, shape))
    check_bounded(utterances)
    results = recognise_all(recognizer, utterances)
    assert [(r.intent, r.text) for r in results if r.intent] == []


@pytest.mark.parametrize("freq,shape", TONES)
def test_tones_straight_into_the_recogniser_give_no_intent(
    recognizer: Recognizer, freq: float, shape: str
) -> None:
    # The worst case: a VAD that let the whole tone in, 5 s at a time.
    pcm = tone_signal(freq, shape)
    results = [recognizer.recognize(pcm[i : i + 5 * RATE]) for i in range(0, pcm.size, 5 * RATE)]
    assert [(r.intent, r.text, round(r.confidence, 2)) for r in results if r.intent] == []


def test_white_noise_gives_no_intent(recognizer: Recognizer) -> None:
    rng = np.random.default_rng(7)
    for dbfs in (-40.0, -20.0, -6.0):
        assert_no_intent(
            recognizer, with_onset(rng.standard_normal(20 * RATE) * 32768 * 10 ** (dbfs / 20))
        )
    recorded = DEFAULT_DATA / "noise" / "white_noise.flac"
    if recorded.exists():
        assert_no_intent(recognizer, to_int16(load_audio(recorded)[: 30 * RATE] * 32768))


def test_clipped_noise_gives_no_intent(recognizer: Recognizer) -> None:
    # A square-ish full-scale signal: the sign of noise, every sample at +-32767.
    rng = np.random.default_rng(3)
    square = np.sign(rng.standard_normal(10 * RATE)) * 32767
    assert_no_intent(recognizer, with_onset(square))


def test_dc_offset_alone_gives_nothing(recognizer: Recognizer) -> None:
    for dc in (500, 4000, 16000, -32768):
        pcm = np.full(20 * RATE, dc, np.int16)
        assert segment(pcm) == []
        assert recognizer.recognize(pcm[: 3 * RATE]).intent is None


# -------------------------------------------------------------- damaged speech


def _overlap(a: Utterance, b: Utterance) -> bool:
    return a.start_s < b.end_s and b.start_s < a.end_s


def test_clipped_speech_is_segmented_and_recognised(
    recognizer: Recognizer, demo: np.ndarray
) -> None:
    clean = segment(demo)
    assert len(clean) == 4
    for gain in (10.0, 100.0):  # 100: almost every sample at full scale, a square wave
        clipped = to_int16(demo.astype(np.float64) * gain)
        utterances = segment(clipped)
        check_bounded(utterances)
        # Speech is still speech: every command is heard, and nothing else. As a square wave
        # (gain 100) one command's pause is heard as its end, so it comes in two pieces. (Under
        # the VAD's 120 ms minimum, until session 32, another command went unheard there, and
        # the count of utterances matched the clean one's by chance.)
        assert all(any(_overlap(c, u) for u in utterances) for c in clean)
        assert all(any(_overlap(u, c) for c in clean) for u in utterances)
        assert len(clean) <= len(utterances) <= len(clean) + 1
        recognise_all(recognizer, utterances)


def test_dc_offset_speech_does_not_crash(recognizer: Recognizer, demo: np.ndarray) -> None:
    for dc in (500, 2000, 8000, -8000):
        utterances = segment(to_int16(demo.astype(np.float64) + dc))
        check_bounded(utterances)
        recognise_all(recognizer, utterances)


def test_dc_offset_speech_is_still_heard(demo: np.ndarray) -> None:
    assert len(segment(to_int16(demo.astype(np.float64) + 2000))) == len(segment(demo))


# ------------------------------------------------------- ten minutes, no pause


def _trimmed(audio: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """A clip without its leading and trailing quiet, so that clips join with no pause."""
    frames = audio[: audio.size // FRAME * FRAME].reshape(-1, FRAME)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > floor_db)
    return frames[loud[0] : loud[-1] + 1].reshape(-1) if loud.size else audio[:0]


@pytest.fixture(scope="module")
def continuous_speech() -> np.ndarray:
    """Ten minutes of real read sentences back to back (speechocean762 test, then AN4)."""
    clips = [
        c
        for c in read_manifest(DEFAULT_DATA)
        if c.split == "test" and c.corpus in ("speechocean762", "an4") and c.seconds >= 2.0
    ]
    parts, total = [], 0
    for clip in clips[:: max(1, len(clips) // 400)]:
        trimmed = _trimmed(load_audio(clip.path))
        parts.append(trimmed)
        total += trimmed.size
        if total >= 600 * RATE:
            break
    audio = np.concatenate(parts)[: 600 * RATE]
    assert audio.size == 600 * RATE, "not enough test speech for ten minutes"
    peak = np.max(np.abs(audio))
    return to_int16(audio / peak * 0.5 * 32768)


@pytest.mark.parametrize("max_ms", [10000, 3000])
def test_ten_minutes_without_a_pause_is_cut_into_bounded_pieces(
    recognizer: Recognizer, continuous_speech: np.ndarray, max_ms: int
) -> None:
    settings = VadSettings(max_utterance_ms=max_ms)
    utterances = segment(continuous_speech, settings)
    check_bounded(utterances, settings)
    covered = sum(u.seconds for u in utterances)
    assert covered > 0.7 * 600, f"only {covered:.0f} s of 600 s of speech reached the recogniser"
    longest = (max_ms // settings.frame_ms) * settings.frame_ms / 1000  # whole frames
    cut = [u for u in utterances if u.seconds >= longest - 1e-9]
    assert len(cut) >= 0.3 * 600 / (max_ms / 1000), "the VAD never had to cut"
    recognise_all(recognizer, utterances[::3])  # a third: the bounds, not accuracy, are tested


# --------------------------------------------------------------- sample rates


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 1), (48000, 2), (22050, 1)])
def test_other_sample_rates_are_converted(
    recognizer: Recognizer, demo: np.ndarray, tmp_path: Path, rate: int, channels: int
) -> None:
    audio = soxr.resample(demo.astype(np.float32) / 32768, RATE, rate)
    path = tmp_path / f"demo-{rate}.wav"
    sf.write(path, np.repeat(audio[:, None], channels, axis=1), rate)
    frames = list(FileSource(path).frames())
    assert {f.size for f in frames} == {FRAME} and frames[0].dtype == np.int16
    assert abs(len(frames) * FRAME - demo.size) <= 2 * FRAME  # same duration at 16 kHz
    pcm = np.concatenate(frames)
    reference = segment(demo)
    utterances = segment(pcm)
    check_bounded(utterances)
    assert [round(u.start_s, 1) for u in utterances] == pytest.approx(
        [round(u.start_s, 1) for u in reference], abs=0.15
    )
    results = recognise_all(recognizer, utterances)
    if rate > RATE:  # nothing was lost on the way: the same answers as the 16 kHz original
        expected = recognise_all(recognizer, reference)
        # The same reading at nearly the same confidence; resampling twice moves the samples a
        # little, so an answer within a hair of the threshold may fall on either side of it.
        assert [r.text for r in results] == [r.text for r in expected]
        for got, want in zip(results, expected, strict=True):
            assert got.confidence == pytest.approx(want.confidence, abs=0.05)
            if abs(want.confidence - recognizer.threshold) > 0.05:
                assert got.intent == want.intent


def test_audio_at_the_wrong_rate_does_not_crash(
    recognizer: Recognizer, demo: np.ndarray, tmp_path: Path
) -> None:
    # A recording whose header lies: 16 kHz samples labelled 8 kHz (twice as slow) and 48 kHz.
    for claimed in (8000, 48000):
        path = tmp_path / f"lying-{claimed}.wav"
        sf.write(path, demo, claimed)
        pcm = np.concatenate(list(FileSource(path).frames()))
        utterances = segment(pcm)
        check_bounded(utterances)
        recognise_all(recognizer, utterances)
