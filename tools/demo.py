"""Make the bundled demo recording: home commands spoken by a voice held out of training,
separated by quiet stretches of real background noise, so `assistant run` has something to
hear on a machine with no microphone.

    python -m tools.demo --out models/home/demo.wav
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from assistant.features import SAMPLE_RATE
from assistant.grammar import load_grammar
from tools.augment import speech_power
from tools.corpus import DEFAULT_DATA, load_audio
from tools.voices import PiperJoeVoice

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (
    "turn on the kitchen light",
    "what time is it",
    "set the bedroom lamp to fifty percent",
    "turn off the tv",
)
GAP_S = 2.0
NOISE_SNR_DB = 30.0  # a quiet room: the tap is audible but well below the voice


def make_demo(out: Path, grammar: Path, data: Path) -> list[dict]:
    loaded = load_grammar(grammar)
    voice = PiperJoeVoice()
    noise = load_audio(data / "noise" / "running_tap.flac")
    pieces, expected, t = [], [], 0.0
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    pieces.append(gap)
    t += GAP_S
    for text in COMMANDS:
        meaning = loaded.recognize_text(text)
        if meaning is None:
            raise SystemExit(f"demo command not in grammar: {text!r}")
        speech = voice.speak(text) * np.float32(0.5)
        pieces += [speech, gap]
        expected.append(
            {"text": text, "intent": meaning[0], "slots": meaning[1], "start": round(t, 2)}
        )
        t += speech.size / SAMPLE_RATE + GAP_S
    audio = np.concatenate(pieces)
    scale = np.sqrt(
        speech_power(np.concatenate(pieces[1::2])) / speech_power(noise) / 10 ** (NOISE_SNR_DB / 10)
    )
    audio += scale * np.resize(noise, audio.size)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, audio, SAMPLE_RATE, subtype="PCM_16")
    out.with_suffix(".json").write_text(json.dumps(expected, indent=2) + "\n")
    return expected


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "home" / "demo.wav")
    parser.add_argument("--grammar", type=Path, default=ROOT / "models" / "home" / "grammar.yaml")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    for item in make_demo(args.out, args.grammar, args.data):
        print(item)


if __name__ == "__main__":
    main()
