"""Audio sources: conversion of any file to 16 kHz mono frames, stdin, errors, microphone."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from assistant.audio import (
    AudioError,
    FileSource,
    MicSource,
    StdinSource,
    list_devices,
    open_source,
    read_audio,
    resolve_device,
)

TONE_HZ = 440.0


def tone(rate: int, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def dominant_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * 16000 / pcm.size)


@pytest.mark.parametrize(
    ("rate", "channels", "fmt"),
    [(8000, 1, "WAV"), (44100, 2, "WAV"), (48000, 2, "FLAC"), (16000, 1, "WAV"), (22050, 1, "OGG")],
)
def test_any_rate_and_channels_become_16k_mono(
    tmp_path: Path, rate: int, channels: int, fmt: str
) -> None:
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, tone(rate, 2.0, channels), rate, format=fmt)
    pcm = read_audio(path)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert abs(pcm.size - 32000) <= 400  # 2 s at 16 kHz, give or take codec padding
    assert abs(dominant_hz(pcm) - TONE_HZ) < 2.0
    # Amplitude survives the conversion (0.5 full scale).
    assert 0.4 < np.abs(pcm).max() / 32768 < 0.6


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_file_frames_have_the_frame_length(tmp_path: Path, frame_ms: int) -> None:
    path = tmp_path / "t.wav"
    sf.write(path, tone(48000, 1.013, 2), 48000)
    frames = list(FileSource(path, frame_ms=frame_ms).frames())
    size = 16 * frame_ms
    assert all(f.size == size and f.dtype == np.int16 for f in frames)
    assert abs(len(frames) * size - 16208) < size * 2


def test_realtime_paces_the_file(tmp_path: Path) -> None:
    import time

    path = tmp_path / "t.wav"
    sf.write(path, tone(16000, 0.6, 1), 16000)
    start = time.monotonic()
    list(FileSource(path, realtime=True).frames())
    assert time.monotonic() - start >= 0.5


def test_stdin_raw_pcm() -> None:
    pcm = (tone(16000, 0.5, 1) * 32767).astype("<i2")
    # Odd byte count split across reads must still decode sample-aligned.
    frames = list(StdinSource(io.BytesIO(pcm.tobytes() + b"\x01"), frame_ms=20).frames())
    joined = np.concatenate(frames)
    assert np.array_equal(joined[: pcm.size], pcm)
    assert all(f.size == 320 for f in frames)


def test_empty_unsupported_and_missing_files_are_clear(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="contains no audio"):
        read_audio(empty)
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    with pytest.raises(AudioError, match="not a readable audio file"):
        FileSource(text)
    with pytest.raises(AudioError, match="no such file"):
        open_source(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioError, match="frame length"):
        FileSource(empty, frame_ms=25)


# -- microphone: only the hardware is replaced, PyAudio's API surface is kept ---------------

PA_OVERFLOW = -9981
PA_UNAVAILABLE = -9985


class FakeStream:
    def __init__(self, script: list, rate: int, channels: int) -> None:
        self.script, self.rate, self.channels = script, rate, channels
        self.closed = False

    def read(self, frames: int, exception_on_overflow: bool = True) -> bytes:
        if not self.script:
            raise OSError(PA_UNAVAILABLE, "Device unavailable")
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        t = np.arange(frames) / self.rate
        mono = (0.3 * np.sin(2 * np.pi * TONE_HZ * t) * 32767).astype("<i2")
        return np.repeat(mono, self.channels).tobytes()

    def stop_stream(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakePyAudioModule:
    """The `pyaudio` module with a USB microphone that only does 48 kHz stereo."""

    paInt16 = 8

    def __init__(self, scripts: list[list]) -> None:
        self.scripts = scripts
        self.opened: list[FakeStream] = []
        module = self

        class PyAudio:
            def get_device_count(self) -> int:
                return 2

            def get_device_info_by_index(self, index: int) -> dict:
                if index == 0:
                    return {"name": "HDMI", "maxInputChannels": 0, "defaultSampleRate": 48000}
                return {"name": "USB PnP Mic", "maxInputChannels": 2, "defaultSampleRate": 48000}

            def get_default_input_device_info(self) -> dict:
                return {"index": 1}

            def is_format_supported(self, rate, input_device, input_channels, input_format):
                if rate == 48000 and input_channels == 2:
                    return True
                raise ValueError("Invalid sample rate")

            def open(self, *, rate, channels, **_):
                if not module.scripts:
                    raise OSError(PA_UNAVAILABLE, "Device unavailable")
                stream = FakeStream(module.scripts.pop(0), rate, channels)
                module.opened.append(stream)
                return stream

            def terminate(self) -> None:
                pass

        self.PyAudio = PyAudio


def test_list_and_resolve_devices() -> None:
    devices = list_devices(FakePyAudioModule([]))
    assert [d.name for d in devices] == ["USB PnP Mic"]
    assert resolve_device(None, devices).index == 1
    assert resolve_device("usb", devices).index == 1
    assert resolve_device("1", devices).index == 1
    with pytest.raises(AudioError, match="no audio input device named"):
        resolve_device("Blue Yeti", devices)


def test_microphone_survives_overflow_and_unplugging() -> None:
    overflow = OSError(PA_OVERFLOW, "Input overflowed")
    # Stream 1: 5 reads, an overflow, 5 reads, then the device disappears (script ends).
    # Opening fails once (still unplugged), then stream 2 delivers again.
    fake = FakePyAudioModule([[None] * 5 + [overflow] + [None] * 5, [None] * 40])
    beats = []
    mic = MicSource(
        "USB", 30, pyaudio_module=fake, backoff=(0.01, 0.05), on_wait=lambda: beats.append(1)
    )
    frames = []
    for frame in mic.frames():
        frames.append(frame)
        if len(frames) == 30:
            mic.stop()
            break
    assert all(f.size == 480 and f.dtype == np.int16 for f in frames)
    assert abs(dominant_hz(np.concatenate(frames)) - TONE_HZ) < 20
    assert mic.overflows == 1
    assert mic.reopens >= 1 and len(fake.opened) == 2
    assert beats  # the back-off told the watchdog it is alive


def test_microphone_stop_during_backoff() -> None:
    mic = MicSource(None, 30, pyaudio_module=FakePyAudioModule([]), backoff=(5.0, 5.0))
    threading.Timer(0.2, mic.stop).start()
    assert list(mic.frames()) == []
