"""The daemon end to end: real recordings in, real Mosquitto out, real sd_notify socket.

Uses the real model bundle (models/home) and the real broker fixture from conftest.py; only
the microphone hardware is replaced (in the watchdog test).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mqtt_helpers import Subscriber
from shared_data import needs_shared_data

from assistant.audio import read_audio
from tools.corpus import DEFAULT_DATA as DATA
from tools.corpus import read_manifest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_shared_data
SITE = "testsite"
TRANSCRIPT = f"assistant/{SITE}/transcript"


# -- helpers ------------------------------------------------------------------------------


class NotifySocket:
    """What systemd sees: a datagram socket the service writes sd_notify messages to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def seen(self, message: str) -> list[float]:
        return [t for t, m in self.messages if m == message]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def commands(count: int) -> list[tuple[str, np.ndarray]]:
    """Real test-split single-command recordings (Speech Commands words, AN4 answers)."""
    rows = [
        c
        for c in read_manifest(DATA)
        if c.split == "test"
        and c.corpus == "speech_commands_v2_test"
        and c.label
        and c.label not in ("_unknown_", "_silence_")
    ]
    picked = rows[:: max(1, len(rows) // count)][:count]
    return [(str(c.path.relative_to(DATA)), read_audio(c.path)) for c in picked]


def session_wav(tmp_path: Path, clips: list[np.ndarray], noise_db: float = -45.0) -> Path:
    """Commands separated by 2 s of quiet room noise (running tap at `noise_db` dBFS)."""
    tap = read_audio(DATA / "noise" / "running_tap.flac").astype(np.float64)
    gap = 32000
    parts = []
    for clip in clips:
        parts += [np.zeros(gap), clip.astype(np.float64)]
    parts.append(np.zeros(gap))
    audio = np.concatenate(parts)
    noise = np.resize(tap, audio.size)
    noise *= 10 ** (noise_db / 20) * 32768 / np.sqrt(np.mean(noise**2))
    mixed = np.clip(audio + noise, -32768, 32767).astype(np.int16)
    path = tmp_path / "session.wav"
    sf.write(path, mixed, 16000)
    return path


def segment(wav: Path) -> list:
    from assistant.audio import FileSource
    from assistant.vad import Segmenter

    segmenter = Segmenter()
    found = [u for f in FileSource(wav).frames() if (u := segmenter.feed(f)) is not None]
    last = segmenter.flush()
    return found + ([last] if last is not None else [])


def run_daemon(
    args: list[str], tmp_path: Path, notify: NotifySocket | None = None, **env: str
) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    environ.update(STATE_DIRECTORY=str(tmp_path / "state"), PYTHONUNBUFFERED="1", **env)
    if notify is not None:
        environ["NOTIFY_SOCKET"] = str(notify.path)
    return subprocess.Popen(
        [sys.executable, "-m", "assistant.cli", "--log-level", "info", "run", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def recognizer():
    from assistant.daemon import load_recognizer

    return load_recognizer()


# -- tests ----------------------------------------------------------------------------------


def test_file_source_end_to_end(tmp_path: Path, mosquitto_broker, recognizer) -> None:
    clips = commands(5)
    wav = session_wav(tmp_path, [pcm for _, pcm in clips])
    # Expected: what the same VAD and recogniser make of the same file, in process and in
    # order: the daemon must deliver exactly these, once each.
    expected = [recognizer.recognize(u.pcm).text for u in segment(wav)]
    assert len(expected) == len(clips)
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    notify = NotifySocket(tmp_path / "notify.sock")
    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    proc = run_daemon(["--source", str(wav), "--broker", broker, "--site", SITE], tmp_path, notify)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        notify.close()
    assert proc.returncode == 0, err[-3000:]
    got = sub.settle(TRANSCRIPT, len(clips), 10)
    sub.close()
    assert [m["text"] for m in got] == expected, err[-3000:]
    assert len({m["id"] for m in got}) == len(got)
    assert all(m["site"] == SITE and m["model"] == recognizer.name for m in got)
    assert all(0 <= m["latency_ms"] < 5000 for m in got)
    starts = [m["started"] for m in got]
    assert starts == sorted(starts)
    assert notify.seen("READY=1") and notify.seen("STOPPING=1")
    assert notify.seen("READY=1")[0] < notify.seen("STOPPING=1")[0]


def test_silence_and_noise_publish_nothing(tmp_path: Path, mosquitto_broker) -> None:
    noise = np.concatenate(
        [
            read_audio(DATA / "noise" / f"{n}.flac")[: 16000 * 20]
            for n in ("white_noise", "pink_noise", "running_tap", "exercise_bike")
        ]
        + [np.zeros(16000 * 10, np.int16)]
    )
    wav = tmp_path / "noise.wav"
    sf.write(wav, noise, 16000)
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    proc = run_daemon(["--source", str(wav), "--broker", broker, "--site", SITE], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert sub.settle(TRANSCRIPT, 1, 1.0) == []
    sub.close()


def test_sigterm_finishes_and_flushes(tmp_path: Path, mosquitto_broker) -> None:
    clips = commands(8)
    wav = session_wav(tmp_path, [pcm for _, pcm in clips])
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    notify = NotifySocket(tmp_path / "notify.sock")
    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    proc = run_daemon(
        ["--source", str(wav), "--broker", broker, "--site", SITE, "--realtime"],
        tmp_path,
        notify,
        WATCHDOG_USEC="1000000",
    )
    try:
        deadline = time.monotonic() + 60
        while not notify.seen("READY=1") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(6.5)  # two or three commands in, mid-way through the file
        assert notify.seen("WATCHDOG=1"), "no watchdog pings while the audio loop runs"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        notify.close()
    assert proc.returncode == 0, err[-3000:]
    assert notify.seen("STOPPING=1")
    # Everything the daemon recognised before it stopped reached the broker.
    line = [ln for ln in err.splitlines() if "stopped after" in ln][-1]
    published = int(line.split("stopped after ")[1].split()[0])
    assert 1 <= published < len(clips)
    assert len(sub.settle(TRANSCRIPT, published, 10)) == published
    sub.close()


def test_sighup_reload_keeps_old_config_when_broken(tmp_path: Path, mosquitto_broker) -> None:
    clips = commands(6)
    wav = session_wav(tmp_path, [pcm for _, pcm in clips])
    config = tmp_path / "assistant.toml"
    good = f"[mqtt]\nhost = '{mosquitto_broker.host}'\nport = {mosquitto_broker.port}\n"
    good += f"site = '{SITE}'\n[audio]\nsource = '{wav}'\nrealtime = true\n"
    config.write_text(good)
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = run_daemon(["--config", str(config)], tmp_path, notify)
    try:
        deadline = time.monotonic() + 60
        while not notify.seen("READY=1") and time.monotonic() < deadline:
            time.sleep(0.05)
        config.write_text(good + "[vad]\naggressiveness = 'very'\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert proc.poll() is None, "a broken config on reload must not stop the daemon"
        config.write_text(good + "[vad]\nhangover_ms = 500\n")
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=120)
    finally:
        notify.close()
    assert proc.returncode == 0, err[-3000:]
    assert "reload failed, keeping the running config" in err
    assert f"{config}:9: vad.aggressiveness" in err
    assert "configuration reloaded" in err
    assert len(notify.seen("RELOADING=1")) == 2
    # The daemon kept working through both reloads: every command was published.
    assert len(sub.settle(TRANSCRIPT, len(clips), 10)) == len(clips)
    sub.close()


def run_off_the_main_thread(daemon, timeout_s: float) -> list[int]:
    """Daemon.run()'s exit status, if it ended in time. Not on the main thread, where run()
    would take SIGTERM from pytest for the rest of the tests (and a pool's terminate hangs)."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()))
    thread.start()
    thread.join(timeout_s)
    return result


def test_watchdog_stops_when_the_audio_loop_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mosquitto_broker
) -> None:
    from assistant import daemon as daemon_mod
    from assistant.config import Config
    from assistant.notify import Notifier

    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(daemon_mod, "AUDIO_STALL_S", 0.5)

    class StallingMic:
        """The microphone hardware: delivers for a while, then read() hangs (driver bug)."""

        name = "mic:stalling"
        live = True

        def __init__(self) -> None:
            self.stopped = threading.Event()

        def frames(self):
            for _ in range(30):
                time.sleep(0.03)
                yield np.zeros(480, np.int16)
            self.stopped.wait(3.0)  # stuck

        def stop(self) -> None:
            self.stopped.set()

    config = Config(state_dir=tmp_path / "state").with_overrides(
        broker=f"{mosquitto_broker.host}:{mosquitto_broker.port}", site=SITE
    )
    daemon = daemon_mod.Daemon(config, source=StallingMic(), notifier=Notifier())
    assert run_off_the_main_thread(daemon, 15) == [0]
    notify.close()
    pings = notify.seen("WATCHDOG=1")
    ready = notify.seen("READY=1")[0]
    assert pings, "pinged while frames were flowing"
    # Frames flowed for ~0.9 s; with a 0.5 s stall limit no ping comes after ~1.6 s.
    assert max(pings) - ready < 1.8
    assert not daemon.healthy()


def test_a_slow_start_is_not_a_stalled_audio_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mosquitto_broker, caplog
) -> None:
    """A Pi Zero 2 loads the model and reaches the broker slower than the stall limit; the
    audio loop has not started then, so it has not stalled, and systemd hears from us."""
    from assistant import daemon as daemon_mod
    from assistant.config import Config
    from assistant.notify import Notifier

    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    stall_s = 0.2
    monkeypatch.setattr(daemon_mod, "AUDIO_STALL_S", stall_s)
    # The Pi Zero's slow load, whatever this machine's speed: a fast one loaded the model and
    # reached the broker in under 0.2 s, and the start no longer outlasted the limit.
    load = daemon_mod.load_recognizer

    def slow_load(settings):
        time.sleep(2 * stall_s)
        return load(settings)

    monkeypatch.setattr(daemon_mod, "load_recognizer", slow_load)

    class QuietMic:
        """The microphone hardware: a second of silence, frame by frame, then the end."""

        name = "mic:quiet"
        live = True

        def frames(self):
            for _ in range(33):
                time.sleep(0.03)
                yield np.zeros(480, np.int16)

        def stop(self) -> None:
            pass

    config = Config(state_dir=tmp_path / "state").with_overrides(
        broker=f"{mosquitto_broker.host}:{mosquitto_broker.port}", site=SITE
    )
    caplog.set_level("INFO", logger="assistant.daemon")
    started = time.monotonic()
    daemon = daemon_mod.Daemon(config, source=QuietMic(), notifier=Notifier())
    assert run_off_the_main_thread(daemon, 30) == [0]
    notify.close()
    ready = notify.seen("READY=1")[0]
    assert ready - started > stall_s, "the start must outlast the stall limit to test this"
    assert "stalled" not in caplog.text
    assert min(notify.seen("WATCHDOG=1")) - ready < stall_s


def test_min_confidence_replaces_the_bundle_bar(recognizer) -> None:
    from assistant.config import ModelSettings
    from assistant.daemon import load_recognizer

    strict = load_recognizer(ModelSettings(min_confidence=0.9))
    assert strict.threshold == 0.9
    assert recognizer.threshold == recognizer.bundle.calibration["threshold"] != 0.9


def test_the_second_listen_follows_the_bundle_unless_turned_off(recognizer) -> None:
    from assistant.config import ModelSettings
    from assistant.daemon import load_recognizer

    fitted = recognizer.bundle.calibration.get("recheck")
    assert (recognizer.recheck is None) == (fitted is None)
    assert load_recognizer(ModelSettings(recheck=False)).recheck is None
