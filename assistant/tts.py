"""Speaking replies: pyttsx3 (espeak-ng) synthesises, PyAudio plays, the microphone is muted.

pyttsx3 is driven from one worker thread (its engines are not thread-safe and espeak-ng can only
be initialised once per process). We always synthesise to a WAV file and play it ourselves,
rather than letting the espeak driver shell out to `aplay`: that way playback can be abandoned
on timeout, a missing sound card is one logged line instead of a crash, and tests can check the
audio. While speaking, plus a short tail for the room's echo, `MicGate.muted` is true and the
daemon drops microphone frames so that the assistant never transcribes itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import string
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .result import Result

# The longest a reply's synthesis may take before it counts as failed (a slow Pi, a long reply).
SYNTHESIS_TIMEOUT_S = 20.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TtsSettings:
    enabled: bool = True
    voice: str | None = None  # an espeak-ng voice id, e.g. "gmw/en-us"; None: engine default
    rate: int = 170  # words per minute
    volume: float = 1.0
    timeout_s: float = 20.0  # a hung engine or output device is abandoned after this
    mute_tail_ms: int = 400  # microphone stays muted this long after speech (room echo)
    output_device: str | int | None = None  # playback device name or index; None: default

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if not 0.0 <= self.volume <= 1.0:
            problems.append(("volume", "must be between 0.0 and 1.0"))
        if not 50 <= self.rate <= 500:
            problems.append(("rate", "must be between 50 and 500 words per minute"))
        if self.timeout_s <= 0:
            problems.append(("timeout_s", "must be positive"))
        if self.mute_tail_ms < 0:
            problems.append(("mute_tail_ms", "must not be negative"))
        return problems


class MicGate:
    """Muted while any speech is in progress and for `tail_s` after the last one ended."""

    def __init__(self, tail_s: float = 0.4) -> None:
        self.tail_s = tail_s
        self._lock = threading.Lock()
        self._active = 0
        self._until = 0.0

    @property
    def muted(self) -> bool:
        with self._lock:
            return self._active > 0 or time.monotonic() < self._until

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active = max(0, self._active - 1)
                self._until = max(self._until, time.monotonic() + self.tail_s)


# ------------------------------------------------------------------------- replies


def builtin_slots(now: dt.datetime | None = None) -> dict[str, str]:
    """Values every template may use: the answers to "what time/date is it"."""
    now = now or dt.datetime.now()
    hour = now.hour % 12 or 12
    time_text = f"{hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}"
    if now.minute == 0:
        time_text = f"{hour} o'clock {'AM' if now.hour < 12 else 'PM'}"
    date_text = f"{now:%A}, {now:%B} {now.day}, {now.year}"
    return {"time": time_text, "date": date_text, "weekday": f"{now:%A}"}


def _slot_text(value: Any) -> str:
    # Slots may be plain values or hassil-style {"value": ..., "text": ...}: speak the words.
    if isinstance(value, Mapping):
        for key in ("text", "value"):
            if key in value and value[key] is not None:
                return str(value[key])
        return ""
    return str(value)


def render_reply(
    result: Result, replies: Mapping[str, str], now: dt.datetime | None = None
) -> str | None:
    """The sentence to speak for a recognised command, or None when there is none."""
    if result.intent is None or result.intent not in replies:
        return None
    values = builtin_slots(now)
    values.update({name: _slot_text(value) for name, value in result.slots.items()})
    template = replies[result.intent]
    missing = [
        name
        for _, name, _, _ in string.Formatter().parse(template)
        if name is not None and name not in values
    ]
    if missing:
        log.warning("reply for %s needs slot(s) %s the result lacks", result.intent, missing)
        return None
    return template.format_map(values)


# ------------------------------------------------------------------------- speaker


@dataclass
class _Job:
    text: str
    wav_path: Path | None  # save here instead of playing
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    error: str | None = None
    callback: Callable[[bool], None] | None = None


_STOP = object()


class Speaker:
    """Owns the TTS engine's thread. `say()` blocks (with a timeout); `say_async()` does not."""

    def __init__(self, settings: TtsSettings, gate: MicGate | None = None) -> None:
        self.settings = settings
        self.gate = gate or MicGate(settings.mute_tail_ms / 1000)
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._engine: Any = None
        self._engine_error: str | None = None
        self._output_warned = False
        self._tmp = tempfile.TemporaryDirectory(prefix="assistant-tts-")
        self._thread = threading.Thread(target=self._run, name="tts", daemon=True)
        self._thread.start()

    def update(self, settings: TtsSettings) -> None:
        """Apply new settings (SIGHUP); the engine picks them up before the next sentence."""
        self.settings = settings
        self.gate.tail_s = settings.mute_tail_ms / 1000

    def say(self, text: str, *, timeout: float | None = None, wav_path: Path | None = None) -> bool:
        """Speak (or save to `wav_path`); True when it finished within the timeout."""
        job = _Job(text=text, wav_path=wav_path)
        timeout = self.settings.timeout_s if timeout is None else timeout
        with self.gate.hold():
            self._jobs.put(job)
            if not job.done.wait(timeout):
                job.cancelled.set()
                log.error("speech timed out after %.1f s; microphone unmuted: %r", timeout, text)
                return False
        if job.error:
            log.warning("could not speak %r: %s", text, job.error)
        return job.ok

    def say_async(self, text: str, callback: Callable[[bool], None] | None = None) -> None:
        """Speak in the background (for MQTT say requests and replies); calls back with success."""

        def run() -> None:
            ok = self.say(text)
            if callback is not None:
                callback(ok)

        threading.Thread(target=run, name="tts-request", daemon=True).start()

    def close(self, timeout: float = 2.0) -> None:
        self._jobs.put(_STOP)
        self._thread.join(timeout)
        self._tmp.cleanup()

    # -- worker thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            if job.cancelled.is_set():
                continue
            try:
                job.ok = self._speak(job)
            except Exception as exc:  # noqa: BLE001 - a TTS failure must never stop the daemon
                job.error = str(exc) or type(exc).__name__
                log.debug("TTS failure", exc_info=True)
            finally:
                job.done.set()

    def _speak(self, job: _Job) -> bool:
        target = job.wav_path or Path(self._tmp.name) / "say.wav"
        self._synthesise(job.text, target)
        if job.wav_path is not None or job.cancelled.is_set():
            return not job.cancelled.is_set()
        # Imported on first use, like pyttsx3: most daemons never speak (see audio.py).
        import soundfile as sf

        pcm, rate = sf.read(str(target), dtype="int16")
        return self._play(pcm, rate, job.cancelled)

    def _engine_ready(self) -> Any:
        if self._engine is None:
            if self._engine_error:
                raise RuntimeError(self._engine_error)
            try:
                self._engine = _init_engine()
            except Exception as exc:  # noqa: BLE001 - missing espeak-ng etc.: report, go on
                self._engine_error = f"TTS engine unavailable: {exc}"
                log.error("%s", self._engine_error)
                raise RuntimeError(self._engine_error) from exc
        engine = self._engine
        if self.settings.voice:
            engine.setProperty("voice", self.settings.voice)
        engine.setProperty("rate", self.settings.rate)
        engine.setProperty("volume", self.settings.volume)
        return engine

    def _synthesise(self, text: str, path: Path) -> None:
        engine = self._engine_ready()
        path.unlink(missing_ok=True)
        finished = threading.Event()
        token = engine.connect("finished-utterance", lambda **_: finished.set())
        try:
            engine.save_to_file(text, str(path))
            engine.runAndWait()
            # pyttsx3's espeak driver synthesises on espeak-ng's own thread, writes the file
            # when that thread ends the utterance and only then says "finished-utterance";
            # runAndWait can return before (seen on a slow CPU: an emulated Pi, where every
            # first reply came out empty). So wait for the engine's own word.
            finished.wait(SYNTHESIS_TIMEOUT_S)
        finally:
            engine.disconnect(token)
        if not path.exists() or path.stat().st_size <= 44:
            raise RuntimeError("the TTS engine produced no audio")

    def _play(self, pcm: np.ndarray, rate: int, cancelled: threading.Event) -> bool:
        try:
            import pyaudio
        except ImportError as exc:
            return self._no_output(f"PyAudio unavailable ({exc})")
        pa = pyaudio.PyAudio()
        stream = None
        try:
            try:
                stream = pa.open(
                    format=pyaudio.paInt16,
                    channels=1,
                    rate=int(rate),
                    output=True,
                    output_device_index=_output_index(pa, self.settings.output_device),
                )
            except (OSError, ValueError) as exc:
                return self._no_output(str(exc))
            chunk = max(1, int(rate) // 20)  # 50 ms: how quickly a cancel takes effect
            for start in range(0, pcm.size, chunk):
                if cancelled.is_set():
                    return False
                stream.write(pcm[start : start + chunk].tobytes())
            return True
        except OSError as exc:
            return self._no_output(f"playback failed: {exc}")
        finally:
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
            pa.terminate()

    def _no_output(self, why: str) -> bool:
        # A Pi without a speaker is a valid setup (transcripts only): say so once, not per reply.
        if not self._output_warned:
            log.warning("no audio output, replies are not spoken: %s", why)
            self._output_warned = True
        return False


def _output_index(pa: Any, device: str | int | None) -> int | None:
    if device is None or device == "":
        return None
    if isinstance(device, int) or str(device).isdigit():
        return int(device)
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        if info.get("maxOutputChannels", 0) > 0 and str(device).lower() in info["name"].lower():
            return index
    raise ValueError(f"no audio output device named {device!r}")


def _init_engine() -> Any:
    import pyttsx3

    engine = pyttsx3.init()
    # pyttsx3's espeak driver print()s "Audio saved to ..." on stdout, which is where
    # `assistant` writes JSON; route that module's print to our debug log instead.
    with contextlib.suppress(ImportError):
        from pyttsx3.drivers import espeak as espeak_driver

        espeak_driver.print = lambda *args, **_: log.debug(" ".join(map(str, args)))  # type: ignore[attr-defined]
    return engine


def synthesise_to_file(text: str, path: Path, settings: TtsSettings | None = None) -> bool:
    """One-shot synthesis into a WAV file (`assistant say --wav`, tests)."""
    speaker = Speaker(settings or TtsSettings())
    try:
        return speaker.say(text, wav_path=path)
    finally:
        speaker.close()
