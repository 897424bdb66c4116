"""Held-out commands in noise: right answers, and wrong answers the bar let through."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from assistant.recognizer import DEFAULT_MODEL_DIR
from tools.heldout import accuracy_by_snr
from tools.voices import EspeakVoice


def test_a_command_heard_confidently_under_another_label_is_a_wrong_accept(tmp_path: Path) -> None:
    voice = EspeakVoice("en-us")
    said = {"right.wav": "what time is it", "mislabelled.wav": "what time is it"}
    labels = {"right.wav": "what time is it", "mislabelled.wav": "turn off the tv"}
    for name, text in said.items():
        sf.write(tmp_path / name, voice.speak(text), 16000)
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    noise = [np.random.default_rng(0).normal(0, 0.01, 16000).astype(np.float32)]
    [clean] = accuracy_by_snr(DEFAULT_MODEL_DIR, tmp_path, noise, snrs=(None,)).values()
    assert clean["clips"] == 2
    assert clean["accuracy"] == 0.5  # "what time is it", heard and accepted
    assert clean["wrong_accepted"] == 0.5  # the same words under another label
    assert clean["text_exact"] == 0.5
