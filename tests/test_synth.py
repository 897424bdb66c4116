"""TTS voices and the synthetic-speech builder, with the real engines that are installed here
(tests of a missing engine are skipped, as available_voices() skips the engine)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from assistant.features import SAMPLE_RATE
from assistant.grammar import load_grammar
from assistant.lexicon import EOS_ID, TOKENS, WORD_BOUNDARY_ID, pronunciations, words_of
from tools.featcache import FeatureSet
from tools.voices import EspeakVoice, Voice, available_voices, select

pytest.importorskip("scipy")  # tools.synth's convolution; comes with pyroomacoustics
from tools import synth  # noqa: E402

VOICES = available_voices()
FAST = select(VOICES, ["espeak:*", "flite:*", "pico:*"])

GRAMMAR = """
language: en
intents:
  HassTurnOn:
    data:
      - sentences: ["turn on [the] {name}", "switch on [the] {name}"]
  HassTurnOff:
    data:
      - sentences: ["turn off [the] {name}"]
  HassNevermind:
    data:
      - sentences: ["never mind", "cancel"]
lists:
  name:
    values: [kitchen light, fan, lamp]
"""


@pytest.fixture
def grammar_path(tmp_path: Path) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(GRAMMAR), encoding="utf-8")
    return path


@pytest.mark.parametrize("voice", VOICES, ids=[v.name for v in VOICES])
def test_each_voice_speaks(voice: Voice) -> None:
    audio = voice.speak("turn on the kitchen light")
    assert audio.dtype == np.float32 and audio.ndim == 1
    seconds = audio.size / SAMPLE_RATE
    assert 0.7 < seconds < 4.0, f"{voice.name}: {seconds:.2f} s"
    # Speech, not silence or a click: loud enough, and loud for a good part of the clip.
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((frames**2).mean(axis=1))
    assert rms.max() > 0.01
    assert (rms > 0.1 * rms.max()).mean() > 0.3
    assert np.abs(audio).max() <= 1.0


# One voice per engine; piper and hibari sample noise in their models, the others do not.
ONE_PER_ENGINE = list({v.engine: v for v in VOICES}.values())
SAMPLING_ENGINES = {"piper", "hibari"}


@pytest.mark.parametrize("voice", ONE_PER_ENGINE, ids=[v.name for v in ONE_PER_ENGINE])
def test_a_seed_gives_the_same_audio(voice: Voice) -> None:
    # Held-out and calibration clips are synthesised again in every new checkout: with the
    # same seeds they must be the same clips, or two checkouts score a bundle on other audio.
    first = voice.speak("turn on the kitchen light", seed=7)
    again = voice.speak("turn on the kitchen light", seed=7)
    assert first.shape == again.shape and np.array_equal(first, again)
    if voice.engine in SAMPLING_ENGINES:  # and the seed is what fixes it
        other = voice.speak("turn on the kitchen light", seed=8)
        assert other.shape != first.shape or not np.array_equal(other, first)


def test_a_clip_is_rendered_the_same_from_the_same_seed() -> None:
    sampling = [v for v in ONE_PER_ENGINE if v.engine in SAMPLING_ENGINES]
    if not sampling:
        pytest.skip("neither piper nor hibari installed")
    for clean in (True, False):
        config = synth.AugmentConfig(clean=clean)
        for voice in sampling:
            clips = [
                synth.render("switch on the fan", voice, np.random.default_rng(3), config, [], [])
                for _ in range(2)
            ]
            assert np.array_equal(*clips), f"{voice.name}, clean={clean}"
    # The TTS seed is spawned, not drawn: the clip's own choices are those of its seed.
    rng = np.random.default_rng(3)
    synth.engine_seed(rng)
    assert rng.uniform() == np.random.default_rng(3).uniform()


def test_voice_names_are_unique_and_grouped() -> None:
    names = [v.name for v in VOICES]
    assert len(names) == len(set(names))
    assert all(
        v.name.startswith(v.engine + ":") and v.group.startswith(v.engine + ":") for v in VOICES
    )


def test_speed_is_honoured() -> None:
    if not select(VOICES, ["espeak:en-us"]):
        pytest.skip("espeak-ng missing")
    voice = EspeakVoice("en-us")
    slow = voice.speak("turn on the kitchen light", speed=0.8).size
    fast = voice.speak("turn on the kitchen light", speed=1.25).size
    assert fast < 0.85 * slow


def test_select_by_name_and_group() -> None:
    voices = [EspeakVoice("en-us", "m1"), EspeakVoice("en", "f2"), EspeakVoice("en-us")]
    assert [v.name for v in select(voices, ["espeak:en-us"])] == ["espeak:en-us+m1", "espeak:en-us"]
    assert [v.name for v in select(voices, exclude=["*+*"])] == ["espeak:en-us"]


def test_sentences_spread_over_intents(grammar_path: Path) -> None:
    samples = synth.pick_sentences(load_grammar(grammar_path), 30, seed=3)
    counts = Counter(s.intent for s in samples)
    assert len(samples) == 30 and set(counts.values()) == {10}


def test_voices_balanced_over_groups() -> None:
    voices = [EspeakVoice("en-us", v) for v in ("", "m1", "m2", "f1")] + [EspeakVoice("en")]
    chosen = synth.assign_voices(40, voices, seed=1)
    assert Counter(v.group for v in chosen) == {"espeak:en-us": 20, "espeak:en": 20}


def test_reverb_keeps_timing() -> None:
    rir = np.zeros(4000, np.float32)
    rir[0], rir[1600] = 1.0, 0.5  # direct path, then one echo 100 ms later
    audio = np.zeros(8000, np.float32)
    audio[1000] = 1.0
    wet = synth.reverb(audio, rir)
    assert int(np.argmax(np.abs(wet))) == 1000 and wet[2600] > 0.4


def test_room_impulse_response() -> None:
    pytest.importorskip("pyroomacoustics")
    rir = synth.make_rir(0)  # seed 0 draws a small, quick room
    assert int(np.argmax(np.abs(rir))) < 10 and np.abs(rir).max() == pytest.approx(1.0)
    assert 0.1 * SAMPLE_RATE < rir.size < 3 * SAMPLE_RATE
    assert np.abs(rir[SAMPLE_RATE // 20 :]).max() > 0.001  # a reverberant tail


def _decode(tokens: np.ndarray) -> list[tuple[str, ...]]:
    words: list[tuple[str, ...]] = [()]
    for t in tokens.tolist():
        if t == EOS_ID:
            break
        if t == WORD_BOUNDARY_ID:
            words.append(())
        else:
            words[-1] += (TOKENS[t],)
    return words


def test_synth_cli_features_and_wavs(grammar_path: Path, tmp_path: Path) -> None:
    if not FAST:
        pytest.skip("no fast TTS engine installed")
    out, wavs = tmp_path / "synth.npz", tmp_path / "wavs"
    synth.main(
        [
            "--grammar",
            str(grammar_path),
            "--count",
            "6",
            "--out",
            str(out),
            "--wav-dir",
            str(wavs),
            "--workers",
            "1",  # a worker process, as in real builds: every engine must work there too
            "--rooms",
            "0",
            "--seed",
            "5",
            "--voices",
            "espeak:*,flite:*,pico:*",
        ]
    )
    expected = synth.pick_sentences(load_grammar(grammar_path), 6, seed=5)

    fs = FeatureSet.load(out)
    assert len(fs) == 6 and fs.texts == [s.text for s in expected]
    for text, tokens in zip(fs.texts, fs.tokens, strict=True):
        assert tokens[-1] == EOS_ID
        assert _decode(tokens) == [pronunciations(w)[0] for w in words_of(text)]
    assert all(c.startswith("synth:") and c[6:] in {v.name for v in FAST} for c in fs.corpora)
    assert all(fs.item(i).shape[1] == 40 and len(fs.item(i)) > 50 for i in range(len(fs)))

    labels = json.loads((wavs / "labels.json").read_text())
    assert sorted(v["text"] for v in labels.values()) == sorted(s.text for s in expected)
    assert {v["intent"] for v in labels.values()} <= {"HassTurnOn", "HassTurnOff", "HassNevermind"}
    for name, label in labels.items():
        audio, rate = sf.read(wavs / name, dtype="float32")
        assert rate == SAMPLE_RATE and audio.ndim == 1 and audio.size > SAMPLE_RATE // 2
        assert label["voice"] in {v.name for v in FAST}


def test_a_crashing_pico_is_an_error_not_a_dead_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools import voices

    # A segmentation fault, as py-nanotts's C code sometimes gives.
    crash = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]
    monkeypatch.setattr(voices, "PICO_COMMAND", crash)
    with pytest.raises(voices.VoiceError, match="exited -11"):
        voices.PicoVoice("en-US").speak("turn on the lamp")
