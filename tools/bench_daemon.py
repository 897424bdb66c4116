"""The daemon end to end, measured against real components.

A private Mosquitto on a free loopback port, the real ``assistant run`` CLI as a child
process, and a paho-mqtt subscriber here. Four measurements:

1. latency: commands (held-out TTS clips) separated by 2-3 s of low real noise, streamed in
   real time (``--realtime``); for each command, transcript arrival at the subscriber minus
   the wall time its speech ended.
2. memory: VmRSS of the daemon process sampled every 0.2 s during the latency run.
3. CPU: 10 minutes of silence and the six shared noises at low levels, processed as fast as
   possible; CPU seconds (user+sys, minus the start-up cost on a 1 s file) per audio second.
4. broker outage: commands stream in real time while the broker is down for ``--outage-s``;
   every transcript the daemon produced must reach the subscriber, in order.

Usage: python -m tools.bench_daemon [--commands 10] [--outage-s 60] [--out bench.json]
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import soundfile as sf
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from assistant.audio import SAMPLE_RATE
from assistant.config import load as load_config
from tools.augment import speech_power
from tools.corpus import DEFAULT_DATA, load_audio, require_noises

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIPS = ROOT / ".cache" / "synth_heldout"
SITE = "bench"
TOPIC = f"assistant/{SITE}/transcript"
MOSQUITTO = "/usr/sbin/mosquitto"
SAMPLE_EVERY_S = 0.2
# "12.34-15.67 s: 'text' -> X (confidence 0.83, latency 120 ms)" (daemon._publish), or with
# --remote "12.34-15.67 s: utterance ID sent to the recogniser workers" (_send_to_workers)
TRANSCRIPT_LOG = re.compile(
    r"(\d+\.\d+)-(\d+\.\d+) s: "
    r"(?:.* -> .* \(confidence \S+, latency |utterance \S+ sent to the recogniser workers)"
)
STOPPED_LOG = re.compile(r"stopped after (\d+) (?:transcript|utterance)")
FAILED_LOG = re.compile(r"failed to handle utterance at")  # the utterance got no transcript


def progress(message: str) -> None:
    print(f"[bench_daemon {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ audio


@dataclass(frozen=True)
class Command:
    name: str
    text: str
    start: int  # sample offset of the clip in the session
    speech_end: int  # sample offset just after the last loud 10 ms frame


def speech_end_offset(clip: np.ndarray, below_peak_db: float = 40.0) -> int:
    """End of the last 10 ms frame within `below_peak_db` of the loudest one.

    TTS clips carry trailing silence; the VAD hang-over counts from the end of speech,
    so latency must too. 40 dB below the peak keeps faint final consonants as speech.
    """
    hop = SAMPLE_RATE // 100
    n = max(1, clip.size // hop)
    power = (clip[: n * hop].astype(np.float64).reshape(n, -1) ** 2).mean(axis=1) + 1e-12
    loud = np.flatnonzero(10 * np.log10(power / power.max()) > -below_peak_db)
    return int((loud[-1] + 1) * hop)


def load_clips(clip_dir: Path) -> list[tuple[str, str, np.ndarray]]:
    labels = json.loads((clip_dir / "labels.json").read_text())
    return [(name, labels[name]["text"], load_audio(clip_dir / name)) for name in sorted(labels)]


def noise_bed(
    noise: np.ndarray, samples: int, level: float, rng: np.random.Generator
) -> np.ndarray:
    """`samples` of `noise` (tiled, random start) scaled so its speech_power equals `level`."""
    tiled = np.tile(noise, samples // noise.size + 2)
    start = int(rng.integers(0, noise.size))
    piece = tiled[start : start + samples].astype(np.float64)
    return piece * np.sqrt(level / speech_power(piece))


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)


class Session:
    """Commands separated by 2-3 s gaps over one low noise bed, built piece by piece."""

    def __init__(
        self, clips: list[tuple[str, str, np.ndarray]], noise: np.ndarray, snr_db: float, seed: int
    ) -> None:
        self.clips = clips
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        mean_speech = float(np.mean([speech_power(c) for _, _, c in clips[:50]]))
        self.noise_level = mean_speech / 10 ** (snr_db / 10)
        self.position = 0
        self.commands: list[Command] = []
        self._next_clip = 0

    def gap(self, seconds: float) -> np.ndarray:
        samples = int(seconds * SAMPLE_RATE)
        piece = noise_bed(self.noise, samples, self.noise_level, self.rng)
        self.position += samples
        return to_int16(piece)

    def command(self) -> np.ndarray:
        """The next clip (cycling through the list) after a 2-3 s gap."""
        name, text, clip = self.clips[self._next_clip % len(self.clips)]
        self._next_clip += 1
        lead = self.gap(float(self.rng.uniform(2.0, 3.0)))
        bed = noise_bed(self.noise, clip.size, self.noise_level, self.rng)
        self.commands.append(
            Command(name, text, self.position, self.position + speech_end_offset(clip))
        )
        self.position += clip.size
        return np.concatenate([lead, to_int16(clip + bed)])


def write_session(path: Path, session: Session, count: int) -> None:
    parts = [session.command() for _ in range(count)]
    parts.append(session.gap(3.0))  # room for the last hang-over
    sf.write(path, np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")


def write_quiet_file(path: Path, seconds: float, dbfs: float, seed: int, data: Path) -> None:
    """Digital silence, then each shared noise in turn at `dbfs` RMS: a quiet home, no speech."""
    rng = np.random.default_rng(seed)
    noises = require_noises(data)
    total = int(seconds * SAMPLE_RATE)
    part = total // (len(noises) + 1)
    rms = 10 ** (dbfs / 20)
    pieces = [np.zeros(total - part * len(noises))]
    for noise in noises:
        piece = noise_bed(noise, part, 1.0, rng)
        pieces.append(piece * rms / np.sqrt(np.mean(piece**2)))
    sf.write(path, to_int16(np.concatenate(pieces)), SAMPLE_RATE, subtype="PCM_16")


# ----------------------------------------------------------------------------- broker


class Broker:
    """A private mosquitto with persistence, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\nlog_dest stderr\n"
            # As root, mosquitto drops to user "mosquitto", who cannot write our temp dir.
            f"{'user root' if os.geteuid() == 0 else ''}\n",
            encoding="utf-8",
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.workdir / "mosquitto.log", "ab") as log:
                self._proc = subprocess.Popen(
                    [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log
                )
            if self._listening(deadline):
                return
            self._proc.kill()  # the port may still be held just after a stop: retry
            self._proc.wait()
            time.sleep(0.1)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def _listening(self, deadline: float) -> bool:
        while time.monotonic() < deadline and self._proc and self._proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        # SIGTERM, not SIGKILL: mosquitto writes its persistence file (our subscriber's
        # session and queued messages) on a graceful stop.
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(timeout=10)
        self._proc = None


# ------------------------------------------------------------------------- subscriber


@dataclass
class Arrival:
    at: float  # time.time() when the subscriber got it
    payload: dict[str, Any]


class Subscriber:
    """A persistent-session QoS 1 subscriber (MQTT v5, clean_start False, session expiry).

    Why persistent: after a broker restart the daemon and this subscriber reconnect in an
    order nobody controls (the daemon's back-off is jittered). With a clean session, a
    transcript the daemon delivers before we have re-subscribed is dropped by the broker
    and the bench would blame the daemon. With a persistent session in a persistent broker,
    our subscription survives the restart and the broker queues for us, so what we measure
    is the daemon's outbox alone - which is what the design promises.
    """

    def __init__(self, port: int) -> None:
        self.arrivals: list[Arrival] = []
        self.connected = threading.Event()
        self.first = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"bench-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("subscriber could not connect")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(TOPIC, qos=1)
            self.connected.set()

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        arrival = Arrival(time.time(), json.loads(message.payload))
        with self._lock:
            self.arrivals.append(arrival)
        self.first.set()

    def unique(self) -> list[Arrival]:
        """First arrival of each transcript id (delivery is at least once)."""
        seen: set[str] = set()
        out = []
        with self._lock:
            for arrival in self.arrivals:
                if arrival.payload["id"] not in seen:
                    seen.add(arrival.payload["id"])
                    out.append(arrival)
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ----------------------------------------------------------------------------- daemon


@dataclass
class DaemonRun:
    """One `assistant run` child: its log, memory samples and resource usage."""

    proc: subprocess.Popen[bytes]
    lines: list[tuple[float, str]] = field(default_factory=list)
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    hwm_kb: int = 0
    rusage: Any = None
    returncode: int | None = None

    def transcripts(self) -> list[tuple[float, float]]:
        """(start_s, end_s) stream times of every transcript the daemon logged."""
        found = (TRANSCRIPT_LOG.search(line) for _, line in self.lines)
        return [(float(m.group(1)), float(m.group(2))) for m in found if m]

    def stopped_count(self) -> int | None:
        for _, line in self.lines:
            if m := STOPPED_LOG.search(line):
                return int(m.group(1))
        return None

    def failed(self) -> int:
        return sum(1 for _, line in self.lines if FAILED_LOG.search(line))

    def tail(self, n: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


def start_daemon(
    args: argparse.Namespace, source: str, port: int, state: Path, realtime: bool
) -> DaemonRun:
    cmd = [sys.executable, "-m", "assistant.cli", "--log-level", "info", "run"]
    cmd += ["--source", source, "--broker", f"127.0.0.1:{port}", "--site", SITE]
    cmd += ["--realtime"] if realtime else []
    cmd += ["--remote"] if getattr(args, "remote", False) else []
    cmd += ["--config", str(args.config)] if args.config else []
    cmd += ["--model", str(args.model)] if args.model else []
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(STATE_DIRECTORY=str(state), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE if source == "-" else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    run = DaemonRun(proc)
    threading.Thread(target=_read_log, args=(run,), daemon=True).start()
    threading.Thread(target=_sample_memory, args=(run,), daemon=True).start()
    return run


def _read_log(run: DaemonRun) -> None:
    assert run.proc.stderr is not None
    for raw in run.proc.stderr:
        run.lines.append((time.time(), raw.decode(errors="replace").rstrip()))


def _sample_memory(run: DaemonRun) -> None:
    status = Path(f"/proc/{run.proc.pid}/status")
    while run.returncode is None:
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
        except OSError:
            return
        if "VmRSS" not in fields:  # a zombie: exited, not yet reaped
            return
        run.rss_kb.append((time.time(), int(fields["VmRSS"].split()[0])))
        run.hwm_kb = max(run.hwm_kb, int(fields["VmHWM"].split()[0]))
        time.sleep(SAMPLE_EVERY_S)


def wait_daemon(run: DaemonRun, timeout: float) -> None:
    """Reap the child with os.wait4 (its own rusage: user+sys CPU of all its threads)."""
    timer = threading.Timer(timeout, run.proc.kill)
    timer.start()
    try:
        _, status, run.rusage = os.wait4(run.proc.pid, 0)
    finally:
        timer.cancel()
    run.returncode = os.waitstatus_to_exitcode(status)
    run.proc.returncode = run.returncode
    time.sleep(0.2)  # let the log reader take the last lines
    if run.returncode != 0:
        raise RuntimeError(f"daemon exited {run.returncode}:\n{run.tail()}")


def cpu_seconds(run: DaemonRun) -> float:
    return float(run.rusage.ru_utime + run.rusage.ru_stime)


def stream_zero(run: DaemonRun, arrivals: list[Arrival]) -> float | None:
    """Wall time of stream position 0, from the daemon's own bookkeeping.

    The daemon stamps ``started = t0 + start_s`` and logs ``start_s`` (a multiple of the
    frame length, so its two decimals are exact); t0 is the wall clock taken as its audio
    loop begins, right before the paced file source releases frame 0.
    """
    starts = [s for s, _ in run.transcripts()]
    if not starts or not arrivals:
        return None
    # The earliest transcript is the first one logged: their difference is t0.
    first = min(arrivals, key=lambda a: a.payload["started"])
    t0 = float(first.payload["started"]) - starts[0]
    # Every other transcript must agree to a millisecond, or the pairing is wrong.
    for arrival in arrivals:
        if min(abs(arrival.payload["started"] - t0 - s) for s in starts) > 0.002:
            raise RuntimeError(f"transcript started={arrival.payload['started']} has no log line")
    return t0


# ---------------------------------------------------------------------- measurements


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summarise_ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 1),
        "p95": round(percentile(values, 95), 1),
        "max": round(max(values), 1),
    }


def memory_summary(run: DaemonRun, steady_from: float | None) -> dict[str, Any]:
    rss = [kb for _, kb in run.rss_kb]
    steady = [kb for t, kb in run.rss_kb if steady_from is None or t >= steady_from]
    return {
        "samples": len(rss),
        "peak_mb": round(max(run.hwm_kb, *rss) / 1024, 1) if rss else None,
        "steady_mb": round(statistics.median(steady) / 1024, 1) if steady else None,
        "aim_mb": 80,
    }


def match_commands(
    commands: list[Command], heard: list[tuple[float, float, Any]]
) -> list[tuple[Command, Any]]:
    """Each command's transcript: the last utterance overlapping its speech."""
    matched = []
    for command in commands:
        lo, hi = command.start / SAMPLE_RATE, command.speech_end / SAMPLE_RATE
        hits = [a for s, e, a in heard if s < hi and e > lo]
        matched.append((command, hits[-1] if hits else None))
    return matched


def bench_latency(args: argparse.Namespace, work: Path, port: int, sub: Subscriber) -> dict:
    clips = load_clips(args.clips)
    noises = require_noises(args.data)
    rng = np.random.default_rng(args.seed)
    noise = noises[int(rng.integers(0, len(noises)))]
    session = Session(clips, noise, args.snr_db, args.seed)
    wav = work / "latency.wav"
    write_session(wav, session, args.commands)
    seconds = session.position / SAMPLE_RATE
    progress(f"latency: {args.commands} commands, {seconds:.0f} s in real time")
    before = len(sub.arrivals)
    worker = start_worker(args, port, work / "state-worker") if args.remote else None
    try:
        run = start_daemon(args, str(wav), port, work / "state-latency", realtime=True)
        wait_daemon(run, seconds + 120)
    finally:
        worker_memory = stop_worker(worker) if worker is not None else None
    expected = run.stopped_count() or 0
    deadline = time.monotonic() + 10
    while len(sub.unique()) - before < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    arrivals = sub.unique()[before:]
    t0 = stream_zero(run, arrivals)
    hangover = load_config(args.config).vad.hangover_ms
    frame_ms = load_config(args.config).vad.frame_ms
    heard = [
        (a.payload["started"] - t0, a.payload["ended"] - t0, a) for a in arrivals if t0 is not None
    ]
    matched = match_commands(session.commands, heard)
    # A microphone hands over a frame once its last sample is recorded; the paced file
    # source releases it at its first sample. Add one frame so the figure is a mic's.
    lat = [
        (a.at - (t0 + c.speech_end / SAMPLE_RATE)) * 1000 + frame_ms
        for c, a in matched
        if a is not None and t0 is not None
    ]
    correct = sum(1 for c, a in matched if a is not None and a.payload["text"] == c.text)
    first_ready = next((t for t, line in run.lines if "ready:" in line), None)
    return {
        "commands": args.commands,
        "audio_s": round(seconds, 1),
        "noise_snr_db": args.snr_db,
        "transcripts_logged": expected,
        "utterances_failed": run.failed(),
        "transcripts_delivered": len(arrivals),
        "commands_matched": sum(1 for _, a in matched if a is not None),
        "commands_text_exact": correct,
        "hangover_ms": hangover,
        "frame_ms": frame_ms,
        "latency_ms": summarise_ms(lat),
        "beyond_hangover_ms": summarise_ms([x - hangover for x in lat]),
        "daemon_latency_ms": summarise_ms([a.payload["latency_ms"] for a in arrivals]),
        "aim_beyond_hangover_ms": 50,
        "memory": memory_summary(run, min((a.at for a in arrivals), default=first_ready)),
        "cpu_s": round(cpu_seconds(run), 2),
        "remote": bool(args.remote),
        "worker_memory": worker_memory,
        "per_command": [
            {
                "text": c.text,
                "heard": a.payload["text"] if a else None,
                "latency_ms": round((a.at - (t0 + c.speech_end / SAMPLE_RATE)) * 1000 + frame_ms)
                if a and t0 is not None
                else None,
            }
            for c, a in matched
        ],
    }


def start_worker(args: argparse.Namespace, port: int, state: Path) -> DaemonRun:
    """``assistant worker`` on the same broker (``--remote``), once it has subscribed."""
    cmd = [sys.executable, "-m", "assistant.cli", "--log-level", "info", "worker"]
    cmd += ["--broker", f"127.0.0.1:{port}"]
    cmd += ["--config", str(args.config)] if args.config else []
    cmd += ["--model", str(args.model)] if args.model else []
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(STATE_DIRECTORY=str(state), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    run = DaemonRun(proc)
    threading.Thread(target=_read_log, args=(run,), daemon=True).start()
    threading.Thread(target=_sample_memory, args=(run,), daemon=True).start()
    deadline = time.monotonic() + 120
    while not any("subscribed to" in line for _, line in run.lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the worker did not start:\n{run.tail()}")
        time.sleep(0.1)
    progress("latency: a recogniser worker is subscribed; the daemon runs with --remote")
    return run


def stop_worker(run: DaemonRun) -> dict[str, Any]:
    run.proc.send_signal(signal.SIGTERM)
    wait_daemon(run, 60)
    return memory_summary(run, None)


def run_fast(args: argparse.Namespace, wav: Path, port: int, state: Path) -> DaemonRun:
    run = start_daemon(args, str(wav), port, state, realtime=False)
    wait_daemon(run, 900)
    return run


def bench_cpu(args: argparse.Namespace, work: Path, port: int, sub: Subscriber) -> dict:
    quiet, tiny = work / "quiet.wav", work / "one-second.wav"
    write_quiet_file(quiet, args.cpu_s, args.noise_dbfs, args.seed, args.data)
    sf.write(tiny, np.zeros(SAMPLE_RATE, np.int16), SAMPLE_RATE, subtype="PCM_16")
    progress("cpu: start-up cost on a 1 s file")
    base = run_fast(args, tiny, port, work / "state-cpu0")
    progress(f"cpu: {args.cpu_s:.0f} s of silence and noise, as fast as possible")
    before = len(sub.unique())
    started = time.monotonic()
    run = run_fast(args, quiet, port, work / "state-cpu")
    wall = time.monotonic() - started
    time.sleep(1.0)
    # Not clipped at 0: on a short file the start-up jitter can exceed the listening cost.
    listening = cpu_seconds(run) - cpu_seconds(base)
    return {
        "audio_s": args.cpu_s,
        "noise_dbfs": args.noise_dbfs,
        "cpu_s_total": round(cpu_seconds(run), 2),
        "cpu_s_startup": round(cpu_seconds(base), 2),
        "wall_s": round(wall, 1),
        "cpu_s_listening": round(listening, 2),
        "share_of_one_core_pct": round(100 * listening / args.cpu_s, 3),
        "aim_pct": 2.0,
        "transcripts_published": len(sub.unique()) - before,
        "transcripts_logged": run.stopped_count(),
        "utterances_failed": run.failed(),
        "memory": memory_summary(run, None),
    }


def feed(
    proc: subprocess.Popen[bytes], session: Session, plan: OutagePlan, chunk_s: float = 0.5
) -> None:
    """Write commands to the daemon's stdin (it paces them) until the plan says stop."""
    stdin = proc.stdin
    assert stdin is not None
    try:
        for piece in plan.pieces(session, chunk_s):
            stdin.write(piece.tobytes())
            stdin.flush()
        stdin.close()
    except (BrokenPipeError, ValueError):
        pass


@dataclass
class OutagePlan:
    """When to stop sending commands and when to close the stream (shared with `feed`)."""

    min_commands: int
    restarted: threading.Event = field(default_factory=threading.Event)
    commands_sent: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    after_restart: int = 0
    tail_s: float = 6.0
    sent_at: float = 0.0

    def pieces(self, session: Session, chunk_s: float) -> Iterator[np.ndarray]:
        # Commands before, during and after the outage: at least `min_commands`, and
        # two sent after the broker is back.
        while len(session.commands) < self.min_commands or self.after_restart < 2:
            if self.done.is_set():  # the bench gave up waiting
                return
            after = self.restarted.is_set()  # before generating: the pipe write may block
            yield session.command()
            self.after_restart += after
        self.sent_at = time.time()
        self.commands_sent.set()
        # Then quiet until every transcript is delivered; the pipe holds ~2 s of audio,
        # so the minimum tail guarantees the last command's hang-over has been heard.
        sent = 0.0
        while sent < self.tail_s or not self.done.is_set():
            yield session.gap(chunk_s)
            sent += chunk_s


def after_restart(arrivals: list[Arrival], up_at: float) -> list[Arrival]:
    return [a for a in arrivals if a.at >= up_at]


def bench_outage(args: argparse.Namespace, work: Path, broker: Broker, sub: Subscriber) -> dict:
    # stdin, not a file: the bench decides when the stream ends (after every transcript
    # is delivered), so the daemon's reconnect back-off (up to 60 s) cannot outlast it.
    clips = load_clips(args.clips)
    noises = require_noises(args.data)
    session = Session(clips[::-1], noises[0], args.snr_db, args.seed + 1)
    plan = OutagePlan(min_commands=args.commands)
    sub.first.clear()
    before = len(sub.unique())
    run = start_daemon(args, "-", broker.port, work / "state-outage", realtime=True)
    writer = threading.Thread(target=feed, args=(run.proc, session, plan), daemon=True)
    writer.start()
    progress("outage: waiting for the first transcript")
    if not sub.first.wait(120):
        raise RuntimeError(f"no transcript arrived:\n{run.tail()}")
    broker.stop()
    down_at = time.time()
    progress(f"outage: broker stopped; down for {args.outage_s:.0f} s")
    time.sleep(args.outage_s)
    broker.start()
    up_at = time.time()
    plan.restarted.set()
    progress("outage: broker back; waiting for every transcript")
    deadline = time.monotonic() + args.outage_s + 180
    while time.monotonic() < deadline:
        logged = len(run.transcripts())
        # The pipe holds ~2 s of audio: 6 s after the last command was written, the
        # daemon has heard its end and the hang-over, and has logged its transcript.
        heard_all = plan.commands_sent.is_set() and time.time() - plan.sent_at >= plan.tail_s
        if heard_all and logged and len(sub.unique()) - before >= logged:
            break
        time.sleep(0.5)
    plan.done.set()
    wait_daemon(run, 60)
    time.sleep(1.0)
    arrivals = sub.unique()[before:]
    expected = run.stopped_count() or 0
    starts = [a.payload["started"] for a in arrivals]
    after = [a.at for a in arrivals if a.at >= up_at]
    # The backlog: transcripts of speech that ended before the restart, delivered after it.
    backlog = [a.at for a in after_restart(arrivals, up_at) if a.payload["ended"] < up_at]
    heard = [(s, e, (s, e)) for s, e in run.transcripts()]
    missed = [c.text for c, hit in match_commands(session.commands, heard) if hit is None]
    return {
        "outage_s": args.outage_s,
        "commands": len(session.commands),
        "commands_without_transcript": missed,
        "transcripts_logged": expected,
        "utterances_failed": run.failed(),
        "delivered_unique": len(arrivals),
        "duplicates": len(sub.arrivals) - before - len(arrivals),
        "all_delivered": len(arrivals) == expected and expected > 0,
        "order_held": starts == sorted(starts),
        "published_during_outage": sum(
            1 for t, line in run.lines if down_at <= t < up_at and TRANSCRIPT_LOG.search(line)
        ),
        "first_delivery_after_restart_s": round(min(after) - up_at, 1) if after else None,
        "backlog": len(backlog),
        "backlog_delivered_after_restart_s": round(max(backlog) - up_at, 1) if backlog else None,
        "memory": memory_summary(run, None),
    }


# ------------------------------------------------------------------------------ report


def table(report: dict) -> str:
    rows: list[tuple[str, str, str]] = []
    lat = report.get("latency")
    if lat:
        bh, m = lat["beyond_hangover_ms"], lat["memory"]
        rows += [
            ("latency end of speech -> subscriber, median / p95",
             f"{lat['latency_ms'].get('median')} / {lat['latency_ms'].get('p95')} ms", ""),
            (f"  beyond the {lat['hangover_ms']} ms hang-over, median / p95",
             f"{bh.get('median')} / {bh.get('p95')} ms", "<= 50 ms"),
            ("  commands heard / sent (text exact)",
             f"{lat['commands_matched']} / {lat['commands']} ({lat['commands_text_exact']})", ""),
            ("memory VmRSS peak / steady", f"{m['peak_mb']} / {m['steady_mb']} MB", "<= 80 MB"),
        ]  # fmt: skip
        if lat.get("worker_memory"):
            w = lat["worker_memory"]
            rows[-1] = ("site (--remote, no model) VmRSS peak / steady", rows[-1][1], rows[-1][2])
            rows.append(("recogniser worker VmRSS peak / steady",
                         f"{w['peak_mb']} / {w['steady_mb']} MB", ""))  # fmt: skip
    cpu = report.get("cpu")
    if cpu:
        rows += [
            (f"CPU listening to {cpu['audio_s']:.0f} s of quiet",
             f"{cpu['share_of_one_core_pct']} % of one core", "<= 2 %"),
            ("  transcripts published from it", str(cpu["transcripts_published"]), "~0"),
        ]  # fmt: skip
    out = report.get("outage")
    if out:
        rows += [
            (f"broker down {out['outage_s']:.0f} s: delivered / logged",
             f"{out['delivered_unique']} / {out['transcripts_logged']}", "all"),
            ("  order held, duplicates", f"{out['order_held']}, {out['duplicates']}", "True"),
            ("  commands sent / without transcript / failed utterances",
             f"{out['commands']} / {len(out['commands_without_transcript'])}"
             f" / {out['utterances_failed']}", ""),
            (f"  backlog of {out['backlog']}: first / all delivered after restart",
             f"{out['first_delivery_after_restart_s']} / "
             f"{out['backlog_delivered_after_restart_s']} s", ""),
        ]  # fmt: skip
    width = max(len(r[0]) for r in rows) if rows else 0
    return "\n".join(f"{a:<{width}}  {b:<24} {c}" for a, b, c in rows)


DEFINITIONS = {
    "latency_ms": "subscriber arrival (wall clock) minus the wall time the command's speech "
    "ended (last 10 ms frame within 40 dB of its peak; stream time mapped by the daemon's t0), "
    "plus one VAD frame of capture buffering that a microphone adds and a paced file does not",
    "beyond_hangover_ms": "latency_ms minus vad.hangover_ms",
    "daemon_latency_ms": "the transcript's own latency_ms: VAD close to publish, in the daemon",
    "worker_memory": "with --remote: VmRSS of the recogniser worker over its whole run",
    "memory": "VmRSS of the daemon process sampled every 0.2 s; peak includes VmHWM; steady is "
    "the median from the first delivered transcript (latency run) or the whole run",
    "share_of_one_core_pct": "(user+sys CPU of the run - same for a 1 s file) / audio seconds, "
    "file read as fast as possible: per-frame work only, timer wake-ups of a real-time run "
    "are not in it",
    "outage": "delivered_unique counts distinct transcript ids at a persistent-session QoS 1 "
    "subscriber; transcripts_logged is the daemon's own 'stopped after N transcript(s)'",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--commands", type=int, default=10, help="commands per run (default 10)")
    p.add_argument("--outage-s", type=float, default=60.0, help="broker down time (default 60)")
    p.add_argument("--cpu-s", type=float, default=600.0, help="quiet audio for CPU (default 600)")
    p.add_argument("--skip-outage", action="store_true")
    p.add_argument("--skip-cpu", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="WAVs + labels.json")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data (its noise/)")
    p.add_argument("--config", type=Path, help="daemon config (TOML)")
    p.add_argument("--model", type=Path, help="model bundle (default models/home)")
    p.add_argument("--snr-db", type=float, default=25.0, help="speech to noise (default 25)")
    p.add_argument("--noise-dbfs", type=float, default=-45.0, help="quiet-file noise RMS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--remote",
        action="store_true",
        help="latency run with `run --remote` and one `assistant worker` (remote recognition)",
    )
    p.add_argument("--out", type=Path, help="write the JSON report here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "definitions": DEFINITIONS,
        "model": str(args.model or ROOT / "models" / "home"),
        "load_average": os.getloadavg(),
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        work = Path(tmp)
        broker = Broker(work)
        broker.start()
        sub = Subscriber(broker.port)
        try:
            if not args.skip_latency:
                report["latency"] = bench_latency(args, work, broker.port, sub)
            if not args.skip_cpu:
                report["cpu"] = bench_cpu(args, work, broker.port, sub)
            if not args.skip_outage:
                report["outage"] = bench_outage(args, work, broker, sub)
        finally:
            sub.close()
            broker.stop()
    report["load_average_end"] = os.getloadavg()
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        progress(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
