"""tools/bench_asking.py end to end at its smallest: one command the bundle is unsure of,
asked about by a site that recognises for itself and by a --remote site with a worker, each
against a real Mosquitto, answered with a real recorded "yes". The hardware is faked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from shared_data import needs_shared_data

from assistant.audio import read_audio
from tools import bench_asking, bench_daemon

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    needs_shared_data,
    pytest.mark.skipif(not Path(bench_daemon.MOSQUITTO).exists(), reason="no mosquitto"),
]


def test_asking_here_and_through_a_worker(tmp_path: Path) -> None:
    # The demo's "set the bedroom lamp to fifty percent", under a bar above any confidence it
    # gets (as in test_dialogue.py), so that it is asked about. Cut 0.15 s after its speech
    # (at 10.3 s): the tool takes the end of speech from a clip's level, and this recording's
    # noise floor is only ~30 dB under its speech.
    clips = tmp_path / "clips"
    clips.mkdir()
    pcm = read_audio(ROOT / "models" / "home" / "demo.wav")[int(7.0 * 16000) : int(10.45 * 16000)]
    sf.write(clips / "lamp.wav", pcm, 16000, subtype="PCM_16")
    slots = {"area": "bedroom", "brightness": 50, "domain": "light"}
    label = {"text": "set the bedroom lamp to fifty percent", "intent": "HassLightSet"}
    (clips / "labels.json").write_text(json.dumps({"lamp.wav": {**label, "slots": slots}}))
    out = tmp_path / "report.json"
    argv = ["--clips", str(clips), "--commands", "1", "--min-confidence", "0.95"]
    assert bench_asking.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["commands"] == 1 and report["right"] == 1
    here, remote = report["modes"]
    for mode in (here, remote):
        assert mode["asked"] == mode["acted_on"] == mode["acted_on_right"] == 1, mode
        assert mode["lost"] == mode["dropped"] == 0
        # The question comes after the VAD's 600 ms hang-over (less the 0.15 s of noise floor
        # counted as speech), and never absurdly late.
        assert 300 < mode["question_ms"]["median"] < 5000
        assert 0 < mode["settled_ms"]["median"] < 5000
    assert here["decisions"] == remote["decisions"] == [True]
