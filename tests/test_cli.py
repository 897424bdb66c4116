"""The `assistant` command: user errors are one line and an exit status, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def assistant(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return subprocess.run(
        [sys.executable, "-m", "assistant.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_transcribe_json_one_object_per_file(tmp_path: Path) -> None:
    clips = sorted((DATA / "speech_commands").rglob("*.opus"))[:2] if DATA.exists() else []
    if not clips:
        pytest.skip("no shared data")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEjunk")
    proc = assistant("transcribe", "--json", str(clips[0]), str(broken), str(clips[1]))
    assert proc.returncode == 1  # one file failed
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    for line, clip in zip(lines, [clips[0], clips[1]], strict=True):
        record = json.loads(line)
        assert set(record) == {"file", "text", "intent", "slots", "confidence", "ms"}
        assert record["file"] == str(clip)
        assert 0.0 <= record["confidence"] <= 1.0 and record["ms"] >= 0
    assert "Traceback" not in proc.stderr
    assert f"assistant: {broken}: not a readable audio file" in proc.stderr


def test_transcribe_human_line(tmp_path: Path) -> None:
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(16000, np.int16), 16000)
    proc = assistant("transcribe", str(wav))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{wav}: ")


def test_transcribe_free_spells_what_was_said(tmp_path: Path) -> None:
    # No grammar: phones decoded freely, spelled as dictionary words where they are one.
    clips = sorted((DATA / "speech_commands" / "yes").glob("*.opus"))[:6] if DATA.exists() else []
    if not clips:
        pytest.skip("no shared data")
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000, np.int16), 16000)
    proc = assistant("transcribe", "--free", "--json", str(silence), *map(str, clips))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [set(r) for r in records] == [{"file", "text", "phones", "ms"}] * (len(clips) + 1)
    assert (records[0]["text"], records[0]["phones"]) == ("", "")
    for record in records[1:]:
        for word in record["phones"].split(" | "):
            assert word and all(phone.isalpha() and phone.isupper() for phone in word.split())
    assert sum(r["text"] == "yes" for r in records[1:]) >= 4, records


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    proc = assistant("transcribe", "--model", str(tmp_path / "nope"), str(tmp_path / "x.wav"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("assistant: model ")


def test_run_with_bad_config_and_missing_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[vad]\nhangover_ms = -1\n")
    proc = assistant("run", "--config", str(config))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"assistant: {config}:2: vad.hangover_ms: must not be negative"
    proc = assistant("run", "--source", str(tmp_path / "missing.wav"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "missing.wav: no such file" in proc.stderr


def test_say_to_wav(tmp_path: Path) -> None:
    out = tmp_path / "say.wav"
    proc = assistant("say", "--wav", str(out), "Turning", "on", "the", "light")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # the engine's chatter stays off stdout
    assert sf.info(out).duration > 0.5


def test_devices_runs() -> None:
    proc = assistant("devices")
    assert proc.returncode in (0, 1)
    assert "Traceback" not in proc.stderr


def test_check_reports_each_part(tmp_path: Path, mosquitto_broker) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.int16), 16000)
    config = tmp_path / "c.toml"
    config.write_text(f"[audio]\nsource = '{wav}'\n")
    good = assistant(
        "check",
        "--config",
        str(config),
        "--broker",
        f"{mosquitto_broker.host}:{mosquitto_broker.port}",
    )
    verdicts = {line.split(":")[0]: line for line in good.stdout.splitlines()}
    assert set(verdicts) == {"config", "model", "audio", "broker"}, good.stdout
    assert "OK" in verdicts["audio"] and "OK" in verdicts["broker"] and "OK" in verdicts["config"]
    mosquitto_broker.stop()
    bad = assistant(
        "check",
        "--config",
        str(config),
        "--broker",
        f"{mosquitto_broker.host}:{mosquitto_broker.port}",
    )
    assert bad.returncode == 1
    assert any(line.startswith("broker:") and "FAIL" in line for line in bad.stdout.splitlines())


def test_transcribe_min_confidence_holds_intents_to_a_higher_bar(tmp_path: Path) -> None:
    from tools.voices import EspeakVoice

    wav = tmp_path / "time.wav"
    sf.write(wav, EspeakVoice("en-us").speak("what time is it"), 16000)
    default = json.loads(assistant("transcribe", "--json", str(wav)).stdout)
    assert default["intent"] == "HassGetCurrentTime", default
    assert default["confidence"] < 1.0
    strict = assistant("transcribe", "--json", "--min-confidence", "1", str(wav))
    record = json.loads(strict.stdout)
    # The same words and confidence, but no intent: below the bar is a rejection.
    assert record["text"] == default["text"] and record["confidence"] == default["confidence"]
    assert record["intent"] is None
    bad = assistant("transcribe", "--min-confidence", "2", str(wav))
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_human_line_says_what_a_rejected_command_was_heard_as(tmp_path: Path) -> None:
    from tools.voices import EspeakVoice

    wav = tmp_path / "time.wav"
    sf.write(wav, EspeakVoice("en-us").speak("what time is it"), 16000)
    accepted = assistant("transcribe", str(wav))
    assert f"{wav}: 'what time is it' -> HassGetCurrentTime (" in accepted.stdout, accepted
    # Held to a bar nothing reaches: rejected, and the line says what it was heard as, so a
    # user can tell "heard but not sure enough" from "not heard".
    strict = assistant("transcribe", "--min-confidence", "1", str(wav))
    assert "-> rejected, not sure enough of HassGetCurrentTime (" in strict.stdout, strict


def test_a_verdict_names_the_slots() -> None:
    from assistant.result import Meaning, Result

    light = {"area": "kitchen", "brightness": {"value": 50, "text": "fifty"}}
    assert Result("", "HassLightSet", light, 0.9).verdict() == (
        "HassLightSet area=kitchen brightness=50"
    )
    unsure = Result("", None, {}, 0.2, guess=Meaning("HassLightSet", light))
    assert (
        unsure.verdict() == "rejected, not sure enough of HassLightSet area=kitchen brightness=50"
    )
    assert Result("", None).verdict() == "rejected"
