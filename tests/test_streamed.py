"""Recordings as the daemon hears them (tools/streamed.py): played in their own room through the
daemon's real VAD, on real dev recordings and the bundle's demo recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from shared_data import needs_shared_data

from assistant.audio import read_audio
from assistant.edges import frame_levels_db
from assistant.features import to_float_pcm
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from assistant.vad import VadSettings
from tools.augment import trim_to_speech
from tools.corpus import DEFAULT_DATA, read_manifest
from tools.evaluate import EVAL_GRAMMARS, an4_items, run_set, speech_commands_items, through_channel
from tools.streamed import NO_ROOM_DBFS, as_streamed, room_of, vad_cuts
from tools.voices import EspeakVoice

ROOT = Path(__file__).resolve().parents[1]
VAD = VadSettings()


def _contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    """Whether ``needle`` lies in ``haystack`` sample for sample."""
    starts = np.flatnonzero(haystack[: haystack.size - needle.size + 1] == needle[0])
    return any(np.array_equal(haystack[s : s + needle.size], needle) for s in starts)


def test_a_command_in_its_room_is_cut_with_the_pre_roll_and_hang_over() -> None:
    # The demo's "set the bedroom lamp to fifty percent" (7.0-10.45 s, as tests/test_bench_asking)
    pcm = read_audio(ROOT / "models" / "home" / "demo.wav")[int(7.0 * 16000) : int(10.45 * 16000)]
    [cut] = vad_cuts(pcm)
    assert cut.dtype == np.int16
    levels = frame_levels_db(to_float_pcm(pcm))
    loud = np.flatnonzero(levels > levels.max() - 20)
    speech = pcm[loud[0] * 160 : (loud[-1] + 1) * 160]
    starts = [at for at in range(cut.size - speech.size) if cut[at] == speech[0]]
    at = next(at for at in starts if np.array_equal(cut[at : at + speech.size], speech))
    # int16 audio passes sample for sample, with the VAD's pre-roll before the words and its
    # hang-over after them (measured: 0.33 s and 0.64 s), as the daemon hands it over.
    assert at >= (VAD.pre_roll_ms - 60) * 16
    assert cut.size - at - speech.size >= (VAD.hangover_ms - 60) * 16
    assert cut.size < pcm.size + 1.5 * 16000  # not the whole stream played


@needs_shared_data
def test_a_real_keyword_is_played_in_its_own_room_and_heard() -> None:
    items = speech_commands_items(read_manifest(DEFAULT_DATA), "dev")
    keyword = next(item for item in items if item.expected_intent == "yes")
    clip = to_float_pcm(keyword.audio)
    streamed = as_streamed(clip)
    # The room around the clip is the level of the clip's own quiet frames, not digital
    # silence: the utterance's first 100 ms (pre-roll, before the word) are within a few dB
    # of the quietest quarter of the clip's frames.
    quiet_db = np.percentile(frame_levels_db(clip), 12.5)
    assert abs(frame_levels_db(streamed[:1600]).mean() - quiet_db) < 6.0
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR, grammar=EVAL_GRAMMARS / "speech_commands.yaml")
    assert recognizer.recognize(streamed).intent == "yes"


@needs_shared_data
def test_a_clip_the_vad_hears_no_speech_in_is_heard_as_nothing() -> None:
    items = speech_commands_items(read_manifest(DEFAULT_DATA), "dev")
    noise = next(item for item in items if item.text == "" and item.expected_intent is None)
    assert vad_cuts(noise.audio) == []
    nothing = as_streamed(noise.audio)
    assert nothing.size == 0
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR, grammar=EVAL_GRAMMARS / "speech_commands.yaml")
    assert recognizer.recognize(nothing).intent is None
    assert vad_cuts(np.zeros(16000, np.int16)) == []
    assert vad_cuts(np.full(50, 0.3, np.float32)) == []  # shorter than a frame of level


@needs_shared_data
def test_the_stream_channel_hears_each_clip_as_the_daemon_cuts_it() -> None:
    items = list(an4_items(read_manifest(DEFAULT_DATA), "test"))[:2]
    streamed = through_channel(items, "stream")
    for whole, cut in zip(items, streamed, strict=True):
        assert (cut.text, cut.speaker) == (whole.text, whole.speaker)
        # AN4 recordings hold ~0.3 s of quiet before the speech and after it: the cut keeps
        # the VAD's 0.3 s pre-roll and 0.6 s hang-over, so it is about as long as the clip.
        assert abs(cut.audio.size - whole.audio.size) < 0.8 * 16000
    recognizer = Recognizer.load(DEFAULT_MODEL_DIR, grammar=EVAL_GRAMMARS / "an4.yaml")
    assert run_set(recognizer, streamed, "an4 stream")["wer"] < 0.5


@needs_shared_data
def test_a_command_made_in_no_room_is_played_in_digital_silence() -> None:
    # A TTS command cut to its words, with a TTS engine's dither: its quietest quarter of
    # frames is speech, which must not become the room it is played in (a room coloured like
    # speech made the VAD run a reply on into the next command in tools.bench_asking).
    words = trim_to_speech(to_float_pcm(EspeakVoice("en-us").speak("turn on the kitchen light")))
    clip = words + np.random.default_rng(0).normal(0, 1e-4, words.size).astype(np.float32)
    assert np.percentile(frame_levels_db(clip), 25) > NO_ROOM_DBFS  # the quarter is speech
    assert not room_of(clip, 16000).any()
    # A recording made in a room is played in noise like its own quiet.
    items = speech_commands_items(read_manifest(DEFAULT_DATA), "dev")
    recorded = next(
        audio
        for item in items
        if np.percentile(frame_levels_db(audio := to_float_pcm(item.audio)), 5) > NO_ROOM_DBFS
    )
    room = room_of(recorded, 16000)
    quiet = np.sort(frame_levels_db(recorded))[: recorded.size // 160 // 4]
    assert abs(np.mean(frame_levels_db(room)) - np.mean(quiet)) < 6


def test_a_stream_with_no_room_around_it_is_cut_as_it_is() -> None:
    # vad_cuts with no lead-in or tail: the audio alone, e.g. a long recording of a room
    pcm = read_audio(ROOT / "models" / "home" / "demo.wav")
    cuts = vad_cuts(pcm, lead_s=0.0, tail_s=0.0)
    assert len(cuts) == 4  # the demo's four commands
