"""Audio sources: 16 kHz mono int16 frames of 10, 20 or 30 ms (what webrtcvad accepts).

Three kinds: a microphone (PyAudio, reopened with back-off when the device fails), a file that
libsndfile can read (any rate, any channel count), and raw s16le 16 kHz mono on stdin (``-``).
Everything else is converted to 16 kHz mono with soxr, in a streaming fashion so that an hour-long
recording never sits in memory at 48 kHz stereo float.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import numpy as np

# soundfile (libsndfile) and soxr are imported where they are used: a daemon listening to a
# 16 kHz microphone or to stdin needs neither, and together they cost ~3 MB resident.
if TYPE_CHECKING:
    import soundfile as sf

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_MS_CHOICES = (10, 20, 30)
_BLOCK_SECONDS = 1.0  # file read granularity: small enough to stop promptly on SIGTERM

# PortAudio error codes (pyaudio.pa*), spelt out so that this module imports without PortAudio.
PA_INPUT_OVERFLOWED = -9981


class AudioError(Exception):
    """A user-readable audio problem (unreadable file, no such device)."""


def frame_samples(frame_ms: int) -> int:
    if frame_ms not in FRAME_MS_CHOICES:
        raise AudioError(f"frame length must be one of {FRAME_MS_CHOICES} ms, not {frame_ms}")
    return SAMPLE_RATE * frame_ms // 1000


def float_to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] float -> [n] float32, averaging channels."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=1, dtype=np.float32) if audio.ndim == 2 else audio


def to_mono_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Whole-buffer conversion of float audio at any rate/channel count to 16 kHz mono int16."""
    mono = to_mono(audio)
    if rate != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return float_to_int16(mono)


def _open_sound_file(path: Path) -> sf.SoundFile:
    import soundfile as sf

    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from exc
    if handle.frames == 0:
        handle.close()
        raise AudioError(f"{path}: contains no audio")
    return handle


def read_audio(path: Path | str) -> np.ndarray:
    """Read a whole file as 16 kHz mono int16 (used by `assistant transcribe`)."""
    return np.concatenate(list(_file_chunks(Path(path))))


def _file_chunks(path: Path) -> Iterator[np.ndarray]:
    """Stream a file as 16 kHz mono int16 chunks of about a second."""
    import soundfile as sf

    with _open_sound_file(path) as handle:
        rate = handle.samplerate
        resampler = _resampler(rate)
        block = max(1, int(rate * _BLOCK_SECONDS))
        try:
            for data in handle.blocks(blocksize=block, dtype="float32", always_2d=True):
                mono = to_mono(data)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono)
                if mono.size:
                    yield float_to_int16(mono)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{path}: read failed ({exc})") from exc
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                yield float_to_int16(tail)


def _resampler(rate: int) -> Any:
    """A streaming resampler from `rate` to 16 kHz mono, or None when none is needed."""
    if rate == SAMPLE_RATE:
        return None
    import soxr

    return soxr.ResampleStream(rate, SAMPLE_RATE, 1)


def _reframe(chunks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Chunks of any length -> frames of exactly `size` samples; the last one is zero-padded."""
    pending = np.zeros(0, dtype=np.int16)
    for chunk in chunks:
        pending = np.concatenate([pending, chunk]) if pending.size else chunk
        usable = pending.size - pending.size % size
        for start in range(0, usable, size):
            yield pending[start : start + size]
        pending = pending[usable:]
    if pending.size:
        yield np.concatenate([pending, np.zeros(size - pending.size, dtype=np.int16)])


def paced(frames: Iterator[np.ndarray], stop: threading.Event) -> Iterator[np.ndarray]:
    """Release frames no faster than real time (for `--realtime` file sources)."""
    start = time.monotonic()
    played = 0
    for frame in frames:
        due = start + played / SAMPLE_RATE
        delay = due - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        played += frame.size
        yield frame


class Source(Protocol):
    """Yields int16 frames of `frame_ms` until exhausted (files) or stopped (microphone)."""

    name: str
    live: bool

    def frames(self) -> Iterator[np.ndarray]: ...

    def stop(self) -> None: ...


class _ChunkedSource:
    """A source that reads chunks of any length (``_chunks``) and hands out fixed frames, paced
    to real time when asked (``realtime``), until its end or ``stop()``."""

    _size: int
    _realtime: bool
    _stop: threading.Event

    def _chunks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def frames(self) -> Iterator[np.ndarray]:
        frames = _reframe(self._chunks(), self._size)
        if self._realtime:
            frames = paced(frames, self._stop)
        for frame in frames:
            if self._stop.is_set():
                return
            yield frame

    def stop(self) -> None:
        self._stop.set()


class FileSource(_ChunkedSource):
    """Any file libsndfile reads (WAV, FLAC, Ogg/Opus, ...), converted to 16 kHz mono."""

    live = False

    def __init__(self, path: Path | str, frame_ms: int = 30, realtime: bool = False) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._size = frame_samples(frame_ms)
        self._realtime = realtime
        self._stop = threading.Event()
        _open_sound_file(self.path).close()  # fail now, with a clear message, not mid-run

    def _chunks(self) -> Iterator[np.ndarray]:
        return _file_chunks(self.path)


class StdinSource(_ChunkedSource):
    """Raw s16le 16 kHz mono PCM on a binary stream (stdin by default)."""

    live = False
    name = "stdin"

    def __init__(
        self, stream: BinaryIO | None = None, frame_ms: int = 30, realtime: bool = False
    ) -> None:
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._size = frame_samples(frame_ms)
        self._realtime = realtime
        self._stop = threading.Event()

    def _chunks(self) -> Iterator[np.ndarray]:
        leftover = b""
        while not self._stop.is_set():
            data = self._stream.read(self._size * 2)
            if not data:
                break
            data = leftover + data
            usable = len(data) - len(data) % 2
            leftover = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    channels: int
    default_rate: int
    default: bool

    def __str__(self) -> str:
        mark = " (default)" if self.default else ""
        return f"{self.index}: {self.name} - {self.channels} ch, {self.default_rate} Hz{mark}"


def _pyaudio_module() -> Any:
    try:
        import pyaudio
    except ImportError as exc:  # PortAudio missing: only the microphone needs it
        raise AudioError(
            f"PyAudio is not available ({exc}); install portaudio and pyaudio"
        ) from exc
    return pyaudio


def list_devices(pyaudio_module: Any = None) -> list[DeviceInfo]:
    """Input-capable audio devices, as `assistant devices` shows them."""
    pa = (pyaudio_module or _pyaudio_module()).PyAudio()
    try:
        return _devices_from(pa)
    finally:
        pa.terminate()


def _devices_from(pa: Any) -> list[DeviceInfo]:
    try:
        default = int(pa.get_default_input_device_info()["index"])
    except OSError:
        default = -1
    found = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        if int(info.get("maxInputChannels", 0)) <= 0:
            continue
        found.append(
            DeviceInfo(
                index=index,
                name=str(info.get("name", "")),
                channels=int(info["maxInputChannels"]),
                default_rate=int(info.get("defaultSampleRate", SAMPLE_RATE)),
                default=index == default,
            )
        )
    return found


def resolve_device(device: str | int | None, devices: list[DeviceInfo]) -> DeviceInfo:
    """Device by index, by (case-insensitive substring of) name, or the default input."""
    if not devices:
        raise AudioError("no audio input device found (is a microphone plugged in?)")
    if device is None or device == "" or device == "default":
        for info in devices:
            if info.default:
                return info
        return devices[0]
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        for info in devices:
            if info.index == int(device):
                return info
        raise AudioError(f"no audio input device with index {device}; see `assistant devices`")
    matches = [info for info in devices if str(device).lower() in info.name.lower()]
    if not matches:
        raise AudioError(f"no audio input device named {device!r}; see `assistant devices`")
    return matches[0]


class MicSource:
    """Microphone through PyAudio, blocking reads in the caller's (audio) thread.

    Overflows (the reader fell behind) are logged and skipped. Any other PortAudio error closes
    the stream and reopens it with exponential back-off, forever: a USB microphone that is
    unplugged and plugged back in resumes without a service restart. `on_wait` is called while
    waiting so the daemon's watchdog knows the loop is alive rather than stuck.
    """

    live = True

    def __init__(
        self,
        device: str | int | None = None,
        frame_ms: int = 30,
        *,
        pyaudio_module: Any = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self._device = device
        self._frame_ms = frame_ms
        self._size = frame_samples(frame_ms)
        self._pa_mod = pyaudio_module or _pyaudio_module()
        self._backoff = backoff
        self._on_wait = on_wait or (lambda: None)
        self._stop = threading.Event()
        self.name = f"mic:{device if device not in (None, '') else 'default'}"
        self.overflows = 0
        self.reopens = 0

    def stop(self) -> None:
        self._stop.set()

    def _sleep(self, seconds: float) -> bool:
        """Sleep in small steps, reporting liveness; True when asked to stop."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self._on_wait()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stop.wait(min(left, 1.0))
        return True

    def _open(self, pa: Any) -> tuple[Any, int, int]:
        devices = _devices_from(pa)
        info = resolve_device(self._device, devices)
        fmt = self._pa_mod.paInt16
        # Prefer 16 kHz mono straight from the device; many USB microphones only do 44.1/48 kHz
        # (and some only stereo) on raw hw: devices, so fall back to the native format + soxr.
        for rate, channels in (
            (SAMPLE_RATE, 1),
            (info.default_rate, 1),
            (SAMPLE_RATE, min(2, info.channels)),
            (info.default_rate, min(2, info.channels)),
        ):
            try:
                supported = pa.is_format_supported(
                    rate, input_device=info.index, input_channels=channels, input_format=fmt
                )
            except ValueError:
                supported = False
            if supported:
                break
        else:
            raise AudioError(f"{info.name}: supports neither 16 kHz nor its default rate")
        per_read = max(1, round(self._size * rate / SAMPLE_RATE))
        stream = pa.open(
            format=fmt,
            channels=channels,
            rate=rate,
            input=True,
            input_device_index=info.index,
            frames_per_buffer=per_read,
        )
        log.info("microphone open: %s at %d Hz, %d channel(s)", info.name, rate, channels)
        self.name = f"mic:{info.name}"
        return stream, rate, channels

    def _chunks(self) -> Iterator[np.ndarray]:
        delay = self._backoff[0]
        while not self._stop.is_set():
            pa = None
            stream = None
            try:
                pa = self._pa_mod.PyAudio()
                stream, rate, channels = self._open(pa)
                resampler = _resampler(rate)
                per_read = max(1, round(self._size * rate / SAMPLE_RATE))
                delay = self._backoff[0]
                while not self._stop.is_set():
                    try:
                        data = stream.read(per_read, exception_on_overflow=True)
                    except OSError as exc:
                        if _pa_errno(exc) != PA_INPUT_OVERFLOWED:
                            raise
                        # The loop fell behind (CPU busy): samples were lost, the stream is fine.
                        self.overflows += 1
                        if self.overflows == 1 or self.overflows % 100 == 0:
                            log.warning("microphone input overflow (%d so far)", self.overflows)
                        continue
                    samples = np.frombuffer(data, dtype="<i2")
                    if channels > 1:
                        samples = samples.reshape(-1, channels).mean(axis=1)
                    if resampler is None:
                        yield samples.astype(np.int16)
                    else:
                        floats = samples.astype(np.float32) / 32768.0
                        yield float_to_int16(resampler.resample_chunk(floats))
            except (OSError, AudioError) as exc:
                self.reopens += 1
                log.error("microphone failed: %s; reopening in %.1f s", exc, delay)
                if self._sleep(delay):
                    return
                delay = min(delay * 2, self._backoff[1])
            finally:
                _close_quietly(stream, pa)

    def frames(self) -> Iterator[np.ndarray]:
        yield from _reframe(self._chunks(), self._size)


def _pa_errno(exc: OSError) -> int | None:
    if isinstance(exc.errno, int):
        return exc.errno
    if exc.args and isinstance(exc.args[-1], int):
        return exc.args[-1]
    return None


def _close_quietly(stream: Any, pa: Any) -> None:
    for action in (
        lambda: stream is not None and stream.stop_stream(),
        lambda: stream is not None and stream.close(),
        lambda: pa is not None and pa.terminate(),
    ):
        try:
            action()
        except Exception:  # noqa: BLE001 - the device is already gone; nothing more to do
            pass


def open_source(
    spec: str,
    *,
    frame_ms: int = 30,
    realtime: bool = False,
    device: str | int | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Source:
    """`mic`, `-` (stdin) or a file path -> a Source."""
    if spec == "mic":
        return MicSource(device, frame_ms, on_wait=on_wait)
    if spec == "-":
        return StdinSource(frame_ms=frame_ms, realtime=realtime)
    return FileSource(spec, frame_ms=frame_ms, realtime=realtime)
