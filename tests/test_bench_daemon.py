"""tools/bench_daemon.py end to end at a tiny size: real mosquitto, real daemon, real model.

3 commands in real time, a 3 s broker outage and 20 s of quiet for CPU (under a minute).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tools import bench_daemon

ROOT = Path(__file__).resolve().parents[1]
# BENCH_DAEMON_MODEL: another bundle, e.g. while models/home is being rebuilt.
MODEL = Path(os.environ.get("BENCH_DAEMON_MODEL", ROOT / "models" / "home"))

pytestmark = [
    pytest.mark.skipif(not (MODEL / "manifest.json").exists(), reason=f"no model bundle {MODEL}"),
    pytest.mark.skipif(not Path(bench_daemon.MOSQUITTO).exists(), reason="no mosquitto"),
    pytest.mark.skipif(not (bench_daemon.DEFAULT_DATA / "noise").is_dir(), reason="no noise"),
]


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build's held-out commands where a build left them; else three spoken here by
    espeak-ng (a fresh CI machine has no .cache)."""
    if (bench_daemon.DEFAULT_CLIPS / "labels.json").exists():
        return bench_daemon.DEFAULT_CLIPS
    from tools import synth

    folder = tmp_path_factory.mktemp("commands")
    synth.main(
        ["--grammar", str(MODEL / "grammar.yaml"), "--count", "3", "--clean"]
        + ["--voices", "espeak:en-us", "--wav-dir", str(folder), "--workers", "0"]
    )
    return folder


def test_bench_daemon_small(tmp_path: Path, commands: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--commands", "3", "--outage-s", "3", "--cpu-s", "20", "--model", str(MODEL)]
    argv += ["--clips", str(commands)]
    assert bench_daemon.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())

    latency = report["latency"]
    assert latency["transcripts_delivered"] == latency["transcripts_logged"] > 0
    assert latency["commands_matched"] >= 2  # the VAD passed (nearly) every command
    # End of speech to arrival is about the hang-over, never absurdly long. "End of speech" is
    # the last frame within 40 dB of the clip's peak; webrtcvad may call that faint frame
    # unvoiced and start the hang-over up to two 30 ms frames sooner (measured: -0.5 ms).
    assert latency["hangover_ms"] - 60 < latency["latency_ms"]["median"] < 5000
    assert latency["memory"]["peak_mb"] >= latency["memory"]["steady_mb"] > 20

    cpu = report["cpu"]
    assert cpu["cpu_s_total"] > 0 and cpu["cpu_s_startup"] > 0
    assert cpu["transcripts_published"] <= 2  # quiet noise, not speech

    outage = report["outage"]
    assert outage["all_delivered"] and outage["order_held"]
    assert outage["delivered_unique"] == outage["transcripts_logged"] > 0
    assert outage["first_delivery_after_restart_s"] is not None


def test_no_noise_recordings_is_a_clear_exit(tmp_path):
    from tools.corpus import require_noises

    with pytest.raises(SystemExit, match="no noise recordings in .*noise"):
        require_noises(tmp_path)
