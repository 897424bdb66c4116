"""Asking when unsure, end to end and in real time: a site that recognises for itself against
a ``--remote`` site whose recogniser worker hears for it, measured in the same run.

The daemon runs in this process against a private Mosquitto; in ``remote`` mode an
``assistant worker`` process recognises. Only the hardware is faked: a microphone plays, in
real time, held-out TTS commands whose answers the bundle is unsure of (from
``--from-confidence`` up to its bar, found by recognising the clips first), and a loudspeaker
notes when it is asked to speak. Each question gets a real reply, the next dev speaker's
Speech Commands "yes" where the answer asked about was right and "no" where it was wrong
(never the test split). Reported per mode:

* question: end of the command's speech to the question (the VAD's hang-over included);
* settled: end of the reply's audio (a 1 s recording) to the transcript asked about, at a
  subscriber;
* how many commands were asked about, acted on after a yes, dropped after a no.

    python -m tools.bench_asking --clips .cache/build-home2/heldout [--commands 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import Config, ModelSettings
from assistant.daemon import Daemon
from assistant.dialogue import ConfirmSettings, worth_asking
from assistant.features import to_float_pcm
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from assistant.result import Result
from tools.asking import CARD_FROM, DEFAULT_CLIPS
from tools.bench_daemon import (
    SITE,
    Broker,
    Subscriber,
    progress,
    speech_end_offset,
    start_worker,
    stop_worker,
    summarise_ms,
    to_int16,
)
from tools.corpus import DEFAULT_DATA, load_audio, read_manifest
from tools.evaluate import speech_commands_items
from tools.heldout import expected_meaning, read_labels
from tools.meaning import same_meaning
from tools.streamed import room_of, vad_cuts

FRAME = 480  # 30 ms at 16 kHz, the VAD's frame
LEAD_IN = 16 * FRAME  # room the microphone plays before the first command (0.48 s)
ROOM_SAMPLES = 16000  # a turn's room, played over and over between its sounds
QUESTION_WAIT_S = 4.0  # after a command's audio: the daemon heard it otherwise (not asked)
SETTLE_S = 2.0  # after a reply's audio, before the next command


@dataclass(frozen=True)
class Turn:
    """A command the bundle is unsure of, and the reply its speaker gives."""

    name: str
    command: np.ndarray
    right: bool  # the answer asked about is what was said: the reply is "yes"
    reply: np.ndarray
    # What the microphone hears around the command: the room it was recorded in
    # (tools.streamed.room_of; digital silence for clean TTS). Digital silence before a noisy
    # recording would be an onset no real room has, which the VAD may cut as an utterance.
    room: np.ndarray


def choose_turns(args: argparse.Namespace) -> list[Turn]:
    recognizer = Recognizer.load(args.model)
    if args.min_confidence is not None:
        recognizer.threshold = args.min_confidence  # as load_recognizer sets it for a daemon
    settings = ConfirmSettings(from_confidence=args.from_confidence)
    replies: dict[str, Iterator[np.ndarray]] = {
        word: iter([item.audio for item in items])
        for word, items in _reply_items(args.data).items()
    }
    turns = []
    for path, label in read_labels(args.clips):
        command = to_int16(load_audio(path))
        result = as_the_daemon_hears(recognizer, command)
        if result is None or not worth_asking(result, settings):
            continue
        assert result.guess is not None
        expected = expected_meaning(recognizer, label)
        right = same_meaning(result.guess.intent, result.guess.slots, *expected)
        reply = next(replies["yes" if right else "no"])
        room = to_int16(room_of(to_float_pcm(command), ROOM_SAMPLES))
        turns.append(Turn(path.name, command, right, to_int16(reply), room))
        if len(turns) == args.commands:
            break
    return turns


def as_the_daemon_hears(recognizer: Recognizer, command: np.ndarray) -> Result | None:
    """The answer for a command played in its room, cut as the daemon's VAD cuts it (its
    pre-roll and hang-over change what the model hears); None unless it is one utterance."""
    cut = vad_cuts(command, lead_s=LEAD_IN / 16000)
    if len(cut) != 1:
        return None
    result = recognizer.recognize(cut[0])
    recognizer.settle()
    return result


def _reply_items(data: Path) -> dict[str, list[Any]]:
    items = list(speech_commands_items(read_manifest(data), "dev"))
    return {word: [i for i in items if i.expected_intent == word] for word in ("yes", "no")}


@dataclass
class Loudspeaker:
    """The speaker hardware: notes when it was asked what. The daemon speaks its questions
    with ``say`` (and waits), the replies to commands with ``say_async``."""

    said: list[tuple[float, str]] = field(default_factory=list)  # the questions
    spoke: threading.Event = field(default_factory=threading.Event)
    replies: list[str] = field(default_factory=list)

    def say(self, text: str, **_kwargs: object) -> bool:
        self.said.append((time.time(), text))
        self.spoke.set()
        return True

    def say_async(self, text: str, callback: object = None) -> None:
        self.replies.append(text)

    def close(self) -> None:
        pass


class ScriptedMicrophone:
    """Plays each command in real time, and its reply once the question was asked."""

    name = "mic:bench"
    live = True

    def __init__(self, turns: list[Turn], speaker: Loudspeaker) -> None:
        self.turns, self.speaker = turns, speaker
        self.command_ends: list[float] = []
        self.reply_ends: list[float | None] = []
        self.done = threading.Event()
        self._stopped = threading.Event()
        self._next_at = 0.0

    def _frame(self, frame: np.ndarray) -> np.ndarray:
        self._next_at = max(self._next_at + FRAME / 16000, time.monotonic() - 0.1)
        time.sleep(max(0.0, self._next_at - time.monotonic()))
        return frame

    def _play(self, pcm: np.ndarray, ends: list[float], trim: bool = True) -> Iterator[np.ndarray]:
        """Play ``pcm`` in real time; note when its speech ended (``trim``: a TTS clip's
        trailing silence is not speech, and the VAD's hang-over counts from the end of
        speech) or else its audio (a real recording's noise floor hides where speech ends)."""
        trailing_s = (pcm.size - speech_end_offset(pcm)) / 16000 if trim else 0.0
        pcm = np.concatenate([pcm, np.zeros(-pcm.size % FRAME, np.int16)])
        for at in range(0, pcm.size, FRAME):
            yield self._frame(pcm[at : at + FRAME])
        ends.append(time.time() - trailing_s)

    def _room(self, seconds: float, room: np.ndarray) -> Iterator[np.ndarray]:
        """``seconds`` of ``room`` (int16), in real time, round and round."""
        for i in range(int(seconds * 16000 / FRAME)):
            if self._stopped.is_set():
                return
            at = i * FRAME % (room.size - room.size % FRAME)
            yield self._frame(room[at : at + FRAME])

    def frames(self) -> Iterator[np.ndarray]:
        self._next_at = time.monotonic()
        if self.turns:
            yield from self._room(LEAD_IN / 16000 + 0.001, self.turns[0].room)
        for i, turn in enumerate(self.turns):
            self.speaker.spoke.clear()
            yield from self._play(turn.command, self.command_ends)
            waited = 0.0
            while not self.speaker.spoke.is_set() and waited < QUESTION_WAIT_S:
                yield from self._room(0.03, turn.room)
                waited += 0.03
            if self.speaker.spoke.is_set():
                yield from self._room(0.4, turn.room)
                yield from self._play(turn.reply, self.reply_ends, trim=False)
            else:
                self.reply_ends.append(None)
            following = self.turns[i + 1].room if i + 1 < len(self.turns) else turn.room
            yield from self._room(SETTLE_S, following)
        self.done.set()
        quiet = np.zeros(FRAME, np.int16)
        while not self._stopped.is_set():
            yield from self._room(0.03, quiet)

    def stop(self) -> None:
        self._stopped.set()


def run_mode(args: argparse.Namespace, turns: list[Turn], remote: bool) -> dict[str, Any]:
    name = "remote" if remote else "here"
    with tempfile.TemporaryDirectory(prefix=f"bench-asking-{name}-") as tmp:
        work = Path(tmp)
        broker = Broker(work)
        broker.start()
        sub = Subscriber(broker.port)
        worker = None
        if remote:
            (work / "worker").mkdir()
            args.config = work / "worker" / "worker.toml"
            bar = args.min_confidence
            args.config.write_text("" if bar is None else f"[model]\nmin_confidence = {bar}\n")
            worker = start_worker(args, broker.port, work / "worker")
        speaker = Loudspeaker()
        mic = ScriptedMicrophone(turns, speaker)
        config = Config(
            state_dir=work / "site",
            model=ModelSettings(dir=args.model, min_confidence=args.min_confidence),
            confirm=ConfirmSettings(from_confidence=args.from_confidence),
        ).with_overrides(broker=f"127.0.0.1:{broker.port}", site=SITE, remote=remote)
        daemon = Daemon(config, source=mic, speaker=speaker)
        thread = threading.Thread(target=daemon.run, name=f"daemon-{name}")
        thread.start()
        try:
            mic.done.wait(60 + 15 * len(turns))
            time.sleep(1.0)
        finally:
            daemon.request_stop()
            thread.join(120)
            if worker is not None:
                stop_worker(worker)
            sub.close()
            broker.stop()
    return summarise(name, turns, mic, speaker, sub.unique())


def summarise(
    name: str, turns: list[Turn], mic: ScriptedMicrophone, speaker: Loudspeaker, arrivals: list
) -> dict[str, Any]:
    asked_about = sorted(
        (a for a in arrivals if "confirmed" in a.payload), key=lambda a: a.payload["started"]
    )
    question_ms, settled_ms, decided = [], [], []
    spoken = iter(speaker.said)
    settled = iter(asked_about)
    # zip without strict: a run cut short by its time limit heard fewer turns.
    for command_end, reply_end in zip(mic.command_ends, mic.reply_ends, strict=False):
        if reply_end is None:
            decided.append(None)
            continue
        said_at, _ = next(spoken)
        question_ms.append((said_at - command_end) * 1000)
        arrival = next(settled, None)
        if arrival is None:
            decided.append("lost")
            continue
        settled_ms.append((arrival.at - reply_end) * 1000)
        decided.append(bool(arrival.payload["confirmed"]))
    return {
        "mode": name,
        "commands": len(turns),
        "asked": sum(d is not None for d in decided),
        "acted_on": sum(d is True for d in decided),
        "acted_on_right": sum(d is True and t.right for d, t in zip(decided, turns, strict=False)),
        "dropped": sum(d is False for d in decided),
        "lost": sum(d == "lost" for d in decided),
        "decisions": decided,
        "question_ms": summarise_ms(question_ms),
        "settled_ms": summarise_ms(settled_ms),
    }


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['commands']} commands the bundle is unsure of, asked from "
          f"{report['from_confidence']} (right {report['right']} of them):")  # fmt: skip
    for mode in report["modes"]:
        q, s = mode["question_ms"], mode["settled_ms"]
        print(
            f"  {mode['mode']:<7} asked {mode['asked']}, acted on {mode['acted_on']} "
            f"({mode['acted_on_right']} right), dropped {mode['dropped']}, lost {mode['lost']}; "
            f"question {q.get('median')} / {q.get('p95')} ms, "
            f"settled {s.get('median')} / {s.get('p95')} ms (median / p95)"
        )
    same = report["modes"][0]["decisions"] == report["modes"][1]["decisions"]
    print(f"  both modes decided every command alike: {same}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="WAVs + labels.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--commands", type=int, default=8)
    parser.add_argument("--from-confidence", type=float, default=CARD_FROM)
    parser.add_argument(
        "--min-confidence", type=float, help="a bar of its own, as [model] min_confidence"
    )
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    progress("choosing commands the bundle is unsure of")
    turns = choose_turns(args)
    report: dict[str, Any] = {
        "from_confidence": args.from_confidence,
        "commands": len(turns),
        "right": sum(t.right for t in turns),
        "modes": [],
    }
    for remote in (False, True):
        progress(f"asking {'through a worker (--remote)' if remote else 'here'}")
        report["modes"].append(run_mode(args, turns, remote))
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
