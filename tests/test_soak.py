"""A short soak (5 minutes of audio) through tools/soak.py: its CLI, its report, zero loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.mqtt import find_mosquitto
from assistant.recognizer import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
    pytest.mark.skipif(
        not list(DEFAULT_MODEL_DIR.glob("*.tflite")), reason="models/home bundle not built"
    ),
]


def test_five_minute_soak_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.soak", "--hours", str(5 / 60), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report == json.loads(proc.stdout)  # the same report on stdout
    assert report["audio_seconds"] == 300
    assert report["transcripts_produced"] == report["utterances"] > 0
    assert report["transcripts_delivered"] == report["transcripts_produced"]
    assert report["transcripts_lost"] == 0 and report["outbox_dropped"] == 0
    assert report["commands_spoken"] > 0 and report["utterances"] >= report["commands_spoken"] // 2
    assert report["utterance_seconds"]["max"] <= report["max_utterance_ms"] / 1000
    assert report["audio_s_per_wall_s"] > 1.0  # faster than real time, even on a busy CI box
    assert 0 < report["rss_start_kb"] <= report["rss_peak_kb"]
    # Five minutes must not grow the process by more than a few tens of MB.
    assert report["rss_end_kb"] - report["rss_start_kb"] < 64 * 1024


def test_hours_must_be_positive() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.soak", "--hours", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--hours must be positive" in proc.stderr
