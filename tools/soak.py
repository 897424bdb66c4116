"""Soak: hours of synthetic audio through Segmenter + Recognizer + Bus, as fast as possible.

    python -m tools.soak [--hours 3] [--out soak.json] [--model models/home] [--seed 0]

The audio is built on the fly in 30 s blocks, so memory does not grow with ``--hours``:
digital silence, recorded noise (``shared/data/noise``) at random levels, and real spoken
commands (the bundle's ``demo.wav`` and test-split Speech Commands recordings) in a quiet
noise floor. Transcripts go through a real Mosquitto that the tool starts on a free loopback
port (:class:`assistant.mqtt.LocalBroker`), and a separate subscriber counts what arrives.

Reported (stdout and ``--out`` JSON): audio seconds per wall second, RSS at start and end
and its peak (``/proc/self/status``), transcripts produced, delivered and lost (must be 0),
utterance lengths and recognition times.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from assistant.audio import SAMPLE_RATE, read_audio
from assistant.mqtt import Bus, LocalBroker, MqttSettings, find_mosquitto
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from assistant.vad import Segmenter, VadSettings
from tools.corpus import DEFAULT_DATA, load_audio, read_manifest

BLOCK_S = 30
SITE = "soak"
# Share of blocks of each kind: mostly nothing, as in a real room.
KINDS = {"silence": 0.4, "noise": 0.3, "commands": 0.3}

log = logging.getLogger("tools.soak")


# ------------------------------------------------------------------------ memory


def rss_kb(field_name: str = "VmRSS") -> int:
    """Resident set size (or VmHWM, its peak) of this process in KiB, from /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


# ------------------------------------------------------------------------- audio


def _int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


def _scaled(audio: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) or 1.0
    return audio.astype(np.float64) * (32768 * 10 ** (dbfs / 20) / rms)


def load_commands(data_dir: Path, model_dir: Path, count: int) -> list[np.ndarray]:
    """Real spoken commands: the bundle's demo commands and test-split Speech Commands."""
    commands: list[np.ndarray] = []
    demo = model_dir / "demo.wav"
    if demo.exists():
        pcm = read_audio(demo)
        for start in json.loads((model_dir / "demo.json").read_text()):
            begin = int((start["start"] - 0.3) * SAMPLE_RATE)
            commands.append(pcm[max(0, begin) : begin + 3 * SAMPLE_RATE])
    if (data_dir / "manifest.csv").exists():
        rows = [
            c
            for c in read_manifest(data_dir)
            if c.split == "test"
            and c.corpus == "speech_commands_v2_test"
            and c.label not in ("", "_unknown_", "_silence_")
        ]
        for clip in rows[:: max(1, len(rows) // count)][:count]:
            commands.append(_int16(load_audio(clip.path) * 32768))
    if not commands:
        raise SystemExit("soak: no commands found (models/home/demo.wav or shared data)")
    return commands


def load_noises(data_dir: Path, rng: np.random.Generator) -> list[np.ndarray]:
    noises = [load_audio(p) for p in sorted((data_dir / "noise").glob("*.flac"))]
    if not noises:  # no shared data: synthetic white and brown noise
        white = rng.standard_normal(60 * SAMPLE_RATE).astype(np.float32)
        noises = [white, np.cumsum(white).astype(np.float32)]
    return noises


@dataclass
class AudioPlan:
    """The ingredients and a seeded generator for endless 30 s blocks."""

    commands: list[np.ndarray]
    noises: list[np.ndarray]
    rng: np.random.Generator
    spoken: int = 0  # commands placed so far
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    history: list[str] = field(default_factory=list)  # kind of each block, in order

    def _noise(self, seconds: int, dbfs: float) -> np.ndarray:
        noise = self.noises[self.rng.integers(len(self.noises))]
        n = seconds * SAMPLE_RATE
        start = int(self.rng.integers(max(1, noise.size - n)))
        return _scaled(np.resize(noise[start:], n), dbfs)

    def block(self) -> np.ndarray:
        kind = str(self.rng.choice(list(KINDS), p=list(KINDS.values())))
        self.kinds[kind] += 1
        self.history.append(kind)
        n = BLOCK_S * SAMPLE_RATE
        if kind == "silence":
            return np.zeros(n, np.int16)
        if kind == "noise":
            return _int16(self._noise(BLOCK_S, float(self.rng.uniform(-45, -15))))
        audio = self._noise(BLOCK_S, -55.0)
        at = int(self.rng.uniform(0.5, 2.0) * SAMPLE_RATE)
        while True:  # commands 1.5-4 s apart, each at a speaking level
            clip = self.commands[self.rng.integers(len(self.commands))]
            if at + clip.size > n:
                break
            audio[at : at + clip.size] += _scaled(clip, float(self.rng.uniform(-28, -16)))
            self.spoken += 1
            at += clip.size + int(self.rng.uniform(1.5, 4.0) * SAMPLE_RATE)
        return _int16(audio)

    def frames(self, seconds: float, frame: int) -> Iterator[np.ndarray]:
        blocks = int(np.ceil(seconds / BLOCK_S))
        for _ in range(blocks):
            pcm = self.block()
            for start in range(0, pcm.size - frame + 1, frame):
                yield pcm[start : start + frame]


# ------------------------------------------------------------------------ broker


class Counter:
    """A plain subscriber on our transcript topic: which ids arrived, how often."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.ids: dict[str, int] = {}
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("soak: the counting subscriber got no SUBACK")

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        uid = json.loads(msg.payload)["id"]
        with self._lock:
            self.ids[uid] = self.ids.get(uid, 0) + 1

    def unique(self) -> int:
        with self._lock:
            return len(self.ids)

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.unique() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.unique() >= count

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- run


@dataclass
class Tally:
    utterances: int = 0
    intents: int = 0
    intents_without_speech: int = 0  # in silence or noise blocks: false accepts
    seconds: list[float] = field(default_factory=list)
    recognise_ms: list[float] = field(default_factory=list)


def _process(
    plan: AudioPlan, seconds: float, recognizer: Recognizer, bus: Bus, vad: VadSettings
) -> Tally:
    segmenter = Segmenter(vad)
    frame = vad.frame_ms * SAMPLE_RATE // 1000
    tally = Tally()
    wall0 = time.time()

    def handle(utterance: Any) -> None:
        t0 = time.perf_counter()
        result = recognizer.recognize(utterance.pcm)
        tally.recognise_ms.append((time.perf_counter() - t0) * 1000)
        tally.utterances += 1
        tally.intents += result.intent is not None
        kind = plan.history[min(int(utterance.start_s // BLOCK_S), len(plan.history) - 1)]
        if result.intent is not None and kind != "commands":
            tally.intents_without_speech += 1
            log.info(
                "false accept in a %s block at %.1f s: %r", kind, utterance.start_s, result.text
            )
        tally.seconds.append(utterance.seconds)
        bus.publish_transcript(
            result,
            utterance_id=f"u{tally.utterances:07d}",
            started=wall0 + utterance.start_s,
            ended=wall0 + utterance.end_s,
            latency_ms=tally.recognise_ms[-1],
            model=recognizer.name,
        )

    for chunk in plan.frames(seconds, frame):
        utterance = segmenter.feed(chunk)
        if utterance is not None:
            handle(utterance)
    last = segmenter.flush()
    if last is not None:
        handle(last)
    return tally


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p95, top = np.percentile(values, [50, 95, 100])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "max": round(float(top), 2)}


def soak(hours: float, model: Path, data_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Run the soak and return the report (also what ``--out`` writes)."""
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("soak: mosquitto is not installed")
    rng = np.random.default_rng(seed)
    recognizer = Recognizer.load(model)
    plan = AudioPlan(load_commands(data_dir, model, 300), load_noises(data_dir, rng), rng)
    vad = VadSettings()
    broker = LocalBroker(binary)
    broker.start()
    workdir = Path(tempfile.mkdtemp(prefix="assistant-soak-"))
    try:
        assert broker.port is not None
        settings = MqttSettings(host=broker.host, port=broker.port, site=SITE)
        counter = Counter(broker.host, broker.port, settings.topics.transcript)
        bus = Bus(settings, workdir / "outbox.sqlite3", on_say=lambda _r: None)
        bus.start()
        rss_start = rss_kb()
        wall = time.perf_counter()
        tally = _process(plan, hours * 3600, recognizer, bus, vad)
        processing_s = time.perf_counter() - wall
        flushed = bus.flush(120)
        arrived = counter.wait_for(tally.utterances, 60)
        wall_s = time.perf_counter() - wall
        rss_end = rss_kb()
        dropped = bus.dropped
        bus.stop(5)
        counter.close()
    finally:
        broker.stop()
    audio_s = float(np.ceil(hours * 3600 / BLOCK_S) * BLOCK_S)
    delivered = counter.unique()
    return {
        "hours": hours,
        "audio_seconds": audio_s,
        "wall_seconds": round(wall_s, 2),
        "processing_seconds": round(processing_s, 2),
        "audio_s_per_wall_s": round(audio_s / wall_s, 1),
        "rss_start_kb": rss_start,
        "rss_end_kb": rss_end,
        "rss_peak_kb": rss_kb("VmHWM"),
        "blocks": plan.kinds,
        "commands_spoken": plan.spoken,
        "utterances": tally.utterances,
        "intents": tally.intents,
        "intents_without_speech": tally.intents_without_speech,
        "transcripts_produced": tally.utterances,
        "transcripts_delivered": delivered,
        "transcripts_lost": tally.utterances - delivered,
        "redelivered": sum(n - 1 for n in counter.ids.values()),
        "outbox_dropped": dropped,
        "outbox_flushed": flushed,
        "all_arrived": arrived,
        "utterance_seconds": _percentiles(tally.seconds),
        "max_utterance_ms": vad.max_utterance_ms,
        "recognise_ms": _percentiles(tally.recognise_ms),
        "model": recognizer.name,
        "seed": seed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=3.0, help="hours of audio (default 3)")
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.hours <= 0:
        parser.error("--hours must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = soak(args.hours, args.model, args.data, args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if report["transcripts_lost"] == 0 and report["outbox_dropped"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
